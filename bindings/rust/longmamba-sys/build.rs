//! Finds libongmamba for the linker: LONGMAMBA_LIB_DIR if set, otherwise the
//! `pkg-config` binary (PKG_CONFIG_PATH may point at an uninstalled build
//! tree's meson-uninstalled/).  No crates: this builds offline.
use std::env;
use std::process::Command;

fn main() {
    for v in ["LONGMAMBA_LIB_DIR", "PKG_CONFIG_PATH", "PKG_CONFIG", "PKG_CONFIG_LIBDIR"] {
        println!("cargo:rerun-if-env-changed={v}");
    }
    println!("cargo:rerun-if-changed=build.rs");

    let mut dirs: Vec<String> = Vec::new();
    if let Ok(dir) = env::var("LONGMAMBA_LIB_DIR") {
        dirs.push(dir);
        println!("cargo:rustc-link-lib=dylib=ongmamba");
    } else {
        let exe = env::var("PKG_CONFIG").unwrap_or_else(|_| "pkg-config".to_string());
        match Command::new(&exe).args(["--libs", "longmamba"]).output() {
            Ok(out) if out.status.success() => {
                let flags = String::from_utf8_lossy(&out.stdout).into_owned();
                for f in flags.split_whitespace() {
                    if let Some(d) = f.strip_prefix("-L") {
                        dirs.push(d.to_string());
                    } else if let Some(l) = f.strip_prefix("-l") {
                        println!("cargo:rustc-link-lib={l}");
                    }
                }
            }
            Ok(out) => {
                println!(
                    "cargo:warning=pkg-config --libs longmamba failed ({}); linking -longmamba \
                     from the default paths (set PKG_CONFIG_PATH or LONGMAMBA_LIB_DIR)",
                    String::from_utf8_lossy(&out.stderr).trim()
                );
                println!("cargo:rustc-link-lib=dylib=ongmamba");
            }
            Err(e) => {
                println!(
                    "cargo:warning=cannot run {exe}: {e}; linking -longmamba from the default \
                     paths (set LONGMAMBA_LIB_DIR)"
                );
                println!("cargo:rustc-link-lib=dylib=ongmamba");
            }
        }
    }
    for d in &dirs {
        println!("cargo:rustc-link-search=native={d}");
    }
    // Dependents read it as DEP_LONGMAMBA_LIB_DIRS (links = "longmamba").
    println!("cargo:lib_dirs={}", dirs.join(":"));
}
