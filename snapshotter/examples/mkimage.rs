//! Write a test image as a docker-archive tar, offline: `mkimage OUT.tar [FILES]`.
//!
//! Without FILES: the end-to-end test's image (`docker.io/library/lmtest:1`: busybox-static, a regular
//! `/etc/mtab`, files owned by 1000, a second layer with a whiteout and an opaque directory). With FILES: the
//! benchmark's image `docker.io/library/lmbench-FILES:1`, the same base plus a layer of FILES small files.

#[path = "../tests/common/image.rs"]
#[allow(dead_code)]
mod image;

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.as_slice() {
        [out] => image::write_test_image(out.as_ref()),
        [out, files] => {
            let n: usize = files.parse().expect("FILES must be a number");
            let name = format!("docker.io/library/lmbench-{n}:1");
            image::write_archive(out.as_ref(), &name, &[image::base_layer(), image::many_files_layer(n)]);
            println!("{name}");
        }
        _ => {
            eprintln!("usage: mkimage OUT.tar [FILES]");
            std::process::exit(2);
        }
    }
}
