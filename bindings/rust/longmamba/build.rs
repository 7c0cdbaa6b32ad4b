//! Tests and examples find the library of an uninstalled build tree without
//! LD_LIBRARY_PATH: an rpath to the directories longmamba-sys linked from.
fn main() {
    if let Ok(dirs) = std::env::var("DEP_LONGMAMBA_LIB_DIRS") {
        for d in dirs.split(':').filter(|d| !d.is_empty()) {
            println!("cargo:rustc-link-arg-tests=-Wl,-rpath,{d}");
            println!("cargo:rustc-link-arg-examples=-Wl,-rpath,{d}");
        }
    }
}
