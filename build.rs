//! Link layout of the release binary (memory, not behaviour).
//!
//! Linux maps executable pages 64 KiB at a time around each first touch, so a binary whose
//! start-up and request-path functions are scattered over 14 MB of text keeps most of it
//! resident. `bench/symbol-order.txt` (written by `ORDER=1 bench/bench.sh`) lists the
//! functions start-up and the measured request paths execute; the linker places them first,
//! together. Names missing from a later build are skipped, so a stale list only costs pages.
//! `-z pack-relative-relocs` stores the relocations as a compact bitmap (glibc 2.36+).
//!
//! Only for release builds on x86_64 Linux with rustc's own lld (the default since 1.90, when
//! the toolchain ships it); `SIDEGATE_PLAIN_LINK=1` turns it off for other linkers.

use std::env;
use std::path::Path;
use std::process::Command;

fn main() {
    let order = Path::new(&env::var("CARGO_MANIFEST_DIR").expect("set by cargo"))
        .join("bench")
        .join("symbol-order.txt");
    println!("cargo:rerun-if-changed={}", order.display());
    println!("cargo:rerun-if-env-changed=SIDEGATE_PLAIN_LINK");
    let var = |k: &str| env::var(k).unwrap_or_default();
    let wanted = var("PROFILE") == "release"
        && var("CARGO_CFG_TARGET_ARCH") == "x86_64"
        && var("CARGO_CFG_TARGET_OS") == "linux"
        && var("CARGO_CFG_TARGET_ENV") == "gnu"
        && var("SIDEGATE_PLAIN_LINK").is_empty()
        && !overrides_linker(&var("CARGO_ENCODED_RUSTFLAGS"))
        && rustc_minor().is_some_and(|m| m >= 90)
        && ships_lld(&var("TARGET"));
    if !wanted {
        return;
    }
    println!("cargo:rustc-link-arg-bins=-Wl,-z,pack-relative-relocs");
    if order.is_file() {
        println!(
            "cargo:rustc-link-arg-bins=-Wl,--symbol-ordering-file={}",
            order.display()
        );
        println!("cargo:rustc-link-arg-bins=-Wl,--no-warn-symbol-ordering");
    }
}

/// Whether the build picks its own linker (then lld's flags may not be understood).
fn overrides_linker(rustflags: &str) -> bool {
    rustflags
        .split('\x1f')
        .any(|f| f.contains("linker") || f.contains("link-self-contained") || f.contains("fuse-ld"))
        || env::vars().any(|(k, _)| k.starts_with("CARGO_TARGET_") && k.ends_with("_LINKER"))
}

/// Output of `rustc ARGS`, trimmed.
fn rustc(args: &[&str]) -> Option<String> {
    let out = Command::new(env::var("RUSTC").ok()?)
        .args(args)
        .output()
        .ok()?;
    Some(String::from_utf8(out.stdout).ok()?.trim().to_string())
}

/// rustc's minor version (1.N): rust-lld links x86_64 Linux by default from 1.90.
fn rustc_minor() -> Option<u32> {
    rustc(&["-V"])?
        .split_whitespace()
        .nth(1)?
        .split('.')
        .nth(1)?
        .parse()
        .ok()
}

/// Whether this toolchain carries its own lld (rustup's do; a distribution's may not, and
/// then the system linker may not know `--symbol-ordering-file`).
fn ships_lld(target: &str) -> bool {
    rustc(&["--print", "sysroot"]).is_some_and(|root| {
        Path::new(&root)
            .join("lib/rustlib")
            .join(target)
            .join("bin/gcc-ld/ld.lld")
            .is_file()
    })
}
