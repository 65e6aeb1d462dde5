//! `layermount`: the command-line face of the library.
//!
//! Exit codes: 0 success, 1 the operation failed (one line on stderr: operation, path, cause), 2 usage error.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use layermount::{Features, remove_all};

#[derive(Parser, Debug)]
#[command(name = "layermount", version, about = "Turn container image layers into mounted root filesystems, safely")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Print what the running kernel supports (each feature yes/no) and the kernel version.
    Probe {
        /// Print one JSON object instead of lines.
        #[arg(long)]
        json: bool,
    },
    /// Remove PATH recursively without crossing a mount or following a symlink; exits 1 naming the mount point
    /// if one is in the way (and then deletes nothing beneath it).
    Rm {
        /// The file or directory to remove.
        path: PathBuf,
    },
}

fn json_string(s: &str) -> String {
    let mut out = String::from("\"");
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

fn probe(json: bool) {
    let f = Features::get();
    if json {
        let fields: Vec<String> = f.list().iter().map(|(name, yes)| format!("\"{name}\":{yes}")).collect();
        println!(
            "{{\"kernel\":{},\"features\":{{{}}},\"overlay_level\":\"{}\"}}",
            json_string(&f.kernel_release),
            fields.join(","),
            f.overlay_level()
        );
    } else {
        println!("kernel: {}", f.kernel_release);
        for (name, yes) in f.list() {
            println!("{name}: {}", if yes { "yes" } else { "no" });
        }
        println!("overlay_level: {}", f.overlay_level());
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Probe { json } => {
            probe(json);
            Ok(())
        }
        Command::Rm { path } => remove_all(&path).map(drop),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("layermount: {e}");
            ExitCode::from(1)
        }
    }
}
