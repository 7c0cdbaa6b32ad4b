//! Raw declarations of `include/longmamba.h`, generated once by the bindgen
//! CLI (`regen.sh`) and committed.  Everything here is `unsafe`; the safe
//! API is the `longmamba` crate.
//!
//! Linking: `build.rs` asks `pkg-config --libs longmamba` (the binary, no
//! crates) for the library, or takes `LONGMAMBA_LIB_DIR` when set.
#![allow(non_camel_case_types, non_snake_case, non_upper_case_globals)]
#![allow(clippy::all)]

include!("bindings.rs");

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn version_matches_header() {
        let v = unsafe { lm_version() };
        assert_eq!(v as u32 / 10000, LM_VERSION_MAJOR);
    }

    #[test]
    fn init_writes_the_rust_struct_size() {
        unsafe {
            let mut p: lm_session_params = std::mem::zeroed();
            lm_session_params_init(&mut p);
            assert_eq!(p.struct_size as usize, std::mem::size_of::<lm_session_params>());
            let mut a: lm_scan_args = std::mem::zeroed();
            lm_scan_args_init(&mut a);
            assert_eq!(a.struct_size as usize, std::mem::size_of::<lm_scan_args>());
            let mut d: lm_decimamba_params = std::mem::zeroed();
            lm_decimamba_params_init(&mut d);
            assert_eq!(d.struct_size as usize, std::mem::size_of::<lm_decimamba_params>());
            assert_eq!(d.l_base, 2000);
            let mut s: lm_sampling_params = std::mem::zeroed();
            lm_sampling_params_init(&mut s);
            assert_eq!(s.struct_size as usize, std::mem::size_of::<lm_sampling_params>());
            assert_eq!((s.temperature, s.top_k, s.top_p, s.flags), (0.0, 0, 1.0, 0));
        }
    }
}
