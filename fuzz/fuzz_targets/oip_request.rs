//! Parses arbitrary bytes as an Open Inference Protocol HTTP request body
//! (JSON, optionally followed by binary tensor data) and checks the request
//! against a model. Every input must give a request or an
//! [`effnet_oip::Error`], never a panic. Every accepted image must have the
//! size the model needs.
//!
//! Input layout: byte 0 selects the model resolution (1 to 4, small so that
//! valid FP32 tensors are reachable), bit 0 of byte 1 selects whether the
//! `Inference-Header-Content-Length` header is present, bytes 2 and 3 hold
//! its value (little-endian), and the rest is the body.

#![no_main]

use bytes::Bytes;
use effnet_oip::{Images, InputSpec, check_input, check_outputs, json::parse_request};
use libfuzzer_sys::fuzz_target;

const MAX_IMAGES: usize = 8;

fuzz_target!(|data: &[u8]| {
    let [resolution, has_header, low, high, body @ ..] = data else {
        return;
    };
    let spec = InputSpec {
        resolution: 1 + usize::from(resolution % 4),
        max_images: MAX_IMAGES,
    };
    let header_length =
        (has_header & 1 == 1).then(|| usize::from(u16::from_le_bytes([*low, *high])));

    let Ok(request) = parse_request(Bytes::copy_from_slice(body), header_length) else {
        return;
    };
    if let Ok(outputs) = check_outputs(&request.outputs) {
        assert!(!outputs.is_empty());
    }
    match check_input(request.inputs, spec) {
        Ok(Images::Tensors(tensors)) => {
            assert!((1..=MAX_IMAGES).contains(&tensors.len()));
            let image_len = 3 * spec.resolution * spec.resolution;
            assert!(tensors.iter().all(|t| t.len() == image_len));
        }
        Ok(Images::Encoded(images)) => {
            assert!((1..=MAX_IMAGES).contains(&images.len()));
        }
        Err(_) => {}
    }
});
