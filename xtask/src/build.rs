//! `cargo xtask build`: the kernel object, built by Debian's rustc for bpfel-unknown-none with
//! bpf-linker, then the daemon, with the object copied next to the daemon binary where the
//! daemon looks for it.

use std::path::PathBuf;

use anyhow::{Context, Result};

use crate::util::{self, cargo, root};

#[derive(clap::Args, Default)]
pub struct BuildArgs {
    /// Build the daemon with the release profile.
    #[arg(long)]
    pub release: bool,
}

/// What a build produced.
pub struct Built {
    pub daemon: PathBuf,
    pub ebpf_object: PathBuf,
}

pub fn run(args: &BuildArgs) -> Result<Built> {
    let object = build_ebpf()?;
    let mut cmd = cargo();
    cmd.current_dir(root())
        .args(["build", "--package", "interceptor"]);
    if args.release {
        cmd.arg("--release");
    }
    util::run(&mut cmd)?;
    let out_dir = root()
        .join("target")
        .join(if args.release { "release" } else { "debug" });
    let installed = out_dir.join("interceptor-ebpf.o");
    std::fs::copy(&object, &installed)
        .with_context(|| format!("copy {} to {}", object.display(), installed.display()))?;
    Ok(Built {
        daemon: out_dir.join("interceptor"),
        ebpf_object: installed,
    })
}

/// Builds the kernel programs; returns the object's path.
pub fn build_ebpf() -> Result<PathBuf> {
    let dir = root().join("interceptor-ebpf");
    let mut cmd = cargo();
    // The crate's .cargo/config.toml names /usr/bin/rustc (Debian's rustc-web) and the target;
    // anything the outer cargo exported for its own toolchain must not leak into that build.
    for var in [
        "RUSTC",
        "RUSTC_WRAPPER",
        "RUSTFLAGS",
        "CARGO_TARGET_DIR",
        "RUSTUP_TOOLCHAIN",
    ] {
        cmd.env_remove(var);
    }
    cmd.current_dir(&dir)
        .args(["build", "--release", "--quiet"]);
    util::run(&mut cmd).context("building the kernel programs (run `cargo xtask deps` first)")?;
    Ok(dir.join("target/bpfel-unknown-none/release/interceptor-ebpf"))
}
