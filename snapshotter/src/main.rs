//! `layermount-snapshotter --address SOCKET --root DIR [--no-fixups]`: serve containerd's snapshots API.
//!
//! Exit codes: 0 after SIGTERM/SIGINT, 1 when the store cannot be opened or the server fails (one line on stderr),
//! 2 on a usage error.

use std::path::PathBuf;
use std::process::ExitCode;

use layermount_snapshotter::{Options, Snapshotter, serve};

const USAGE: &str = "usage: layermount-snapshotter --address SOCKET --root DIR [--no-fixups]";

fn parse() -> Result<(PathBuf, PathBuf, Options), String> {
    let (mut address, mut root, mut options) = (None, None, Options::default());
    let mut args = std::env::args_os().skip(1);
    while let Some(arg) = args.next() {
        match arg.to_str() {
            Some("--address") => address = Some(args.next().ok_or("--address needs a value")?.into()),
            Some("--root") => root = Some(args.next().ok_or("--root needs a value")?.into()),
            Some("--no-fixups") => options.fixups = false,
            Some("-h" | "--help") => return Err(String::new()),
            _ => return Err(format!("unexpected argument {arg:?}")),
        }
    }
    Ok((address.ok_or("--address is required")?, root.ok_or("--root is required")?, options))
}

fn main() -> ExitCode {
    let (address, root, options) = match parse() {
        Ok(v) => v,
        Err(e) if e.is_empty() => {
            println!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            eprintln!("layermount-snapshotter: {e}\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    let run = || -> layermount_snapshotter::Result<()> {
        let snapshotter = Snapshotter::open(&root, options)?;
        let rt = tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()
            .map_err(|e| layermount_snapshotter::Error::Internal(format!("start runtime: {e}")))?;
        rt.block_on(serve(snapshotter, &address))
    };
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("layermount-snapshotter: {e}");
            ExitCode::FAILURE
        }
    }
}
