//! Load a model, prefill, decode, classify channels after calibrating on a
//! few random windows, and run a LongMamba prefill.
//!
//!     cargo run --example example -- MODEL_DIR
use longmamba::{argmax, Backend, CalibParams, LongMambaParams, Model, ModelParams};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let dir = std::env::args().nth(1).ok_or("usage: example MODEL_DIR")?;
    let model = Model::load(&dir, &ModelParams { backend: Backend::Cpu, ..Default::default() })?;
    let v = model.vocab_size();
    println!(
        "{:?} {} layers, d_model {}, vocab {v}",
        model.info().arch,
        model.info().n_layer,
        model.info().d_model
    );

    // a tiny deterministic generator (no crates)
    let mut seed = 42u64;
    let mut rand_tokens = |n: usize| -> Vec<i32> {
        (0..n)
            .map(|_| {
                seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                ((seed >> 33) % v as u64) as i32
            })
            .collect()
    };

    let mut s = model.session()?;
    let prompt = rand_tokens(16);
    let mut logits = s.prefill(&prompt, 1)?;
    let mut generated = Vec::new();
    for _ in 0..8 {
        let t = argmax(&logits) as i32;
        generated.push(t);
        logits = s.decode(t)?;
    }
    println!("greedy continuation: {generated:?}");

    // LongMamba: calibrate on random windows, classify channels, filtered prefill
    let windows: Vec<Vec<i32>> = (0..4).map(|_| rand_tokens(64)).collect();
    let refs: Vec<&[i32]> = windows.iter().map(|w| w.as_slice()).collect();
    let calib = model.calibrate(&refs, &CalibParams::default())?;
    let (_mask, counts) = calib.classify_channels(1e-3)?;
    println!("global channels per layer: {counts:?} of {}", calib.info().n_channels);
    let mut s = model.session()?; // borrows calib from here on
    s.set_longmamba(&calib, &LongMambaParams::default())?;
    let long_prompt = rand_tokens(256);
    let logits = s.prefill(&long_prompt, 1)?;
    println!("longmamba prefill of {} tokens: next token {}", long_prompt.len(), argmax(&logits));
    Ok(())
}
