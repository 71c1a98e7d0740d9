//! Besides napi's setup, two link options that make the addon take less memory once loaded
//! (issue 5's RSS target; measured in README "Performance"). Each is used only where the
//! linker accepts it, so a build never fails for their sake.
//! - `link/hot-functions.txt`: the functions a connection runs, placed together. The kernel
//!   maps code 64 KiB around each page touched, so scattered hot code keeps most of the
//!   addon's text resident. Regenerate it with `node link/hot-functions.js`.
//! - Packed relative relocations (DT_RELR): the loader reads a few KiB instead of 300. The
//!   addon then needs glibc 2.36 to load, so only when it is built for the glibc it runs on,
//!   and not for a binary to ship to other machines (`NATIVE_PUBSUB_PORTABLE=1`, which the
//!   prebuilt npm/ packages need: `scripts/prepublish.js` refuses a binary built without it).

use std::env;
use std::path::{Path, PathBuf};
use std::process::Command;

const HOT_FUNCTIONS: &str = "link/hot-functions.txt";
/// glibc learned DT_RELR in 2.36.
const RELR_GLIBC: (u32, u32) = (2, 36);

fn main() {
    napi_build::setup();
    println!("cargo:rerun-if-changed={HOT_FUNCTIONS}");
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-env-changed=NATIVE_PUBSUB_PORTABLE");
    if env::var("CARGO_CFG_TARGET_OS").as_deref() != Ok("linux") {
        return;
    }
    let manifest = PathBuf::from(env::var_os("CARGO_MANIFEST_DIR").unwrap_or_default());
    let ordering = [
        format!("-Wl,--symbol-ordering-file={}", manifest.join(HOT_FUNCTIONS).display()),
        // The list names functions of one build; those a later build lacks are just skipped.
        "-Wl,--no-warn-symbol-ordering".to_string(),
    ];
    if linker_accepts(&ordering) {
        for arg in &ordering {
            println!("cargo:rustc-cdylib-link-arg={arg}");
        }
    }
    let relr = ["-Wl,-z,pack-relative-relocs".to_string()];
    let portable = env::var_os("NATIVE_PUBSUB_PORTABLE").is_some_and(|v| !v.is_empty() && v != "0");
    if !portable && builds_for_own_glibc() && host_glibc().is_some_and(|v| v >= RELR_GLIBC) && linker_accepts(&relr) {
        println!("cargo:rustc-cdylib-link-arg={}", relr[0]);
    }
}

/// Links an empty cdylib for the target with `args`, as this build's rustc would.
fn linker_accepts(args: &[String]) -> bool {
    let (Some(rustc), Some(out), Ok(target)) = (env::var_os("RUSTC"), env::var_os("OUT_DIR"), env::var("TARGET")) else {
        return false;
    };
    let out = Path::new(&out);
    let source = out.join("link_probe.rs");
    if std::fs::write(&source, "").is_err() {
        return false;
    }
    let rustflags = env::var("CARGO_ENCODED_RUSTFLAGS").unwrap_or_default();
    Command::new(rustc)
        .args(["--crate-type", "cdylib", "--crate-name", "link_probe", "--edition", "2021", "--target", &target])
        .args(rustflags.split('\x1f').filter(|flag| !flag.is_empty()))
        .args(args.iter().flat_map(|arg| ["-C".to_string(), format!("link-arg={arg}")]))
        .arg("-o")
        .arg(out.join("liblink_probe.so"))
        .arg(&source)
        .output()
        .is_ok_and(|output| output.status.success())
}

/// The addon runs where it is built: a native glibc build (`npm install` builds from source).
fn builds_for_own_glibc() -> bool {
    env::var("CARGO_CFG_TARGET_ENV").as_deref() == Ok("gnu") && env::var("TARGET").ok() == env::var("HOST").ok()
}

/// This machine's glibc version, as `getconf` reports it ("glibc 2.36").
fn host_glibc() -> Option<(u32, u32)> {
    let output = Command::new("getconf").arg("GNU_LIBC_VERSION").output().ok()?;
    let text = String::from_utf8(output.stdout).ok()?;
    let (major, minor) = text.trim().strip_prefix("glibc ")?.split_once('.')?;
    Some((major.parse().ok()?, minor.split('.').next()?.parse().ok()?))
}
