//! The incident, reproduced with the real client: many user-namespaced containers, each holding a fifo, an open file
//! and its working directory inside its root, killed and removed at once, round after round. The image layers must
//! come out byte-identical, nothing mounted, no snapshot directory containerd does not know, no process left.

mod common;

use std::path::PathBuf;
use std::process::Child;

use common::{
    ChildOutput, Containerd, SNAPSHOTTER, have_containerd, mounts_beneath, privileged, spawn_piped, tree_digest,
};

const CONTAINERS: usize = 20;
const ROUNDS: usize = 10;

fn all_ok(children: Vec<(String, Child)>, what: &str) {
    for (id, mut child) in children {
        let out = child.wait_with_output_ref();
        assert!(out.starts_with("exit status: 0"), "{what} {id}: {out}");
    }
}

#[test]
fn incident_many_containers_killed_and_removed_at_once() {
    if !have_containerd("incident_many_containers_killed_and_removed_at_once") {
        return;
    }
    privileged("incident_many_containers_killed_and_removed_at_once", |scratch| {
        let c = Containerd::with_test_image(scratch);
        let layers: Vec<(PathBuf, String)> =
            c.snapshotter.snapshot_dirs().into_iter().map(|d| (d.clone(), tree_digest(&d.join("fs")))).collect();
        assert_eq!(layers.len(), 2);
        for round in 0..ROUNDS {
            let ids: Vec<String> = (0..CONTAINERS).map(|i| format!("inc-{round}-{i}")).collect();
            let script = "mkfifo /tmp/fifo && exec 3<>/tmp/fifo 4>/held && cd /home/user && echo up > /tmp/up \
                          && exec sleep 600";
            let started = ids
                .iter()
                .map(|id| {
                    let run = c.run_args("-d", true, id, &["/bin/sh", "-c", script]);
                    let run: Vec<&str> = run.iter().map(String::as_str).collect();
                    (id.clone(), spawn_piped(&mut c.ctr_cmd(&run)))
                })
                .collect();
            all_ok(started, "ctr run -d");
            // Every container holds its fifo, file and cwd before it is killed.
            c.wait_for(60, "every container to be up", || {
                c.snapshotter.snapshot_dirs().iter().filter(|d| d.join("fs/tmp/up").exists()).count() == CONTAINERS
            });
            let ctr = format!("ctr --address {} --namespace {}", c.address.display(), common::NAMESPACE);
            let killed = ids
                .iter()
                .map(|id| {
                    let script = format!(
                        "{ctr} tasks kill -s SIGKILL {id}; {ctr} tasks delete -f {id} >/dev/null && {ctr} containers rm {id}"
                    );
                    (id.clone(), spawn_piped(std::process::Command::new("sh").args(["-c", &script])))
                })
                .collect();
            all_ok(killed, "kill and remove");
            // containerd 1.6's collector drops a deletion event that arrives while it is collecting (the snapshotter
            // stays marked dirty until the next collection): kick a collection now and then while waiting.
            let mut polls = 0;
            c.wait_for(90, "the collector to remove every container snapshot", || {
                polls += 1;
                if polls % 50 == 0 {
                    c.gc_kick();
                }
                c.snapshotter.snapshot_dirs().len() == layers.len()
            });
            assert_eq!(mounts_beneath(&c.snapshotter.root), Vec::<PathBuf>::new(), "round {round}");
        }
        let now: Vec<(PathBuf, String)> =
            c.snapshotter.snapshot_dirs().into_iter().map(|d| (d.clone(), tree_digest(&d.join("fs")))).collect();
        assert_eq!(now, layers, "image layers changed");
        let known = c.ctr_ok(&["snapshots", "--snapshotter", SNAPSHOTTER, "ls"]);
        assert_eq!(known.lines().count() - 1, now.len(), "snapshots containerd knows: {known}");
        assert_eq!(c.shim_pids(), Vec::<i32>::new(), "no shim or container process left");
        c.stop();
    });
}
