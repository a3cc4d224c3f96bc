//! Decodes and preprocesses arbitrary bytes with the server's default limits:
//! every input must give an image or an [`effnet_imaging::ImageError`],
//! never a panic, and never allocate past the decode limit. The decode time
//! limit is off, so that libFuzzer's timeout reports slow inputs.

#![no_main]

use effnet_imaging::{Limits, PreprocessSpec, decode_and_preprocess};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let spec = PreprocessSpec {
        resolution: 224,
        crop_padding: 32,
        mean: [127.0; 3],
        std: [128.0; 3],
    };
    // No time limit, so that libFuzzer's own timeout reports slow inputs.
    let limits = Limits {
        max_decode_time: None,
        ..Limits::default()
    };
    if let Ok((tensor, _)) = decode_and_preprocess(data, &limits, &spec) {
        assert_eq!(tensor.len(), spec.output_len());
        assert!(tensor.iter().all(|v| v.is_finite()));
    }
});
