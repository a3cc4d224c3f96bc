//! Request bodies of each protocol, prepared once before the run, and the
//! check of a successful response.
//!
//! Open Inference Protocol (KServe v2) requests carry either the encoded
//! image as a BYTES tensor of shape `[1]` or the preprocessed FP32 tensor
//! `[1, 3, R, R]` (decoded here with the server's own preprocessing), in the
//! JSON body or with the binary tensor extension: a JSON header of
//! `Inference-Header-Content-Length` bytes followed by the raw tensor data.

use base64::Engine as _;
use bytes::Bytes;
use serde_json::json;

/// Header that gives the length of the JSON part of a binary-extension body.
pub const HEADER_LENGTH: &str = "Inference-Header-Content-Length";

/// The wire protocol under test.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Protocol {
    /// Raw image body to `POST /v1/models/{model}/classify`.
    Rest,
    /// Open Inference Protocol over HTTP, tensors in JSON.
    OipJson,
    /// Open Inference Protocol over HTTP, binary tensor extension.
    OipBinary,
    // TODO: `grpc-classify` and `oip-grpc` once the gRPC services and their
    // protos are on main.
}

/// What an Open Inference Protocol request carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum OipInput {
    /// The encoded image as a BYTES tensor of shape `[1]`.
    Bytes,
    /// The preprocessed image as an FP32 tensor `[1, 3, R, R]`.
    Fp32,
}

/// One ready request body.
#[derive(Debug, Clone)]
pub struct Payload {
    pub body: Bytes,
    pub content_type: &'static str,
    /// Length of the JSON header of a binary-extension body.
    pub header_length: Option<usize>,
}

/// A model input as the protocol sees it.
pub enum Tensor<'a> {
    /// An encoded image.
    Bytes(&'a [u8]),
    /// A preprocessed CHW image of side `resolution`.
    Fp32 { data: &'a [f32], resolution: u32 },
}

// === impl Protocol ===

impl Protocol {
    pub fn name(self) -> &'static str {
        match self {
            Self::Rest => "rest",
            Self::OipJson => "oip-json",
            Self::OipBinary => "oip-binary",
        }
    }

    /// URL path of the model's endpoint.
    pub fn path(self, model: &str) -> String {
        match self {
            Self::Rest => format!("/v1/models/{model}/classify?top_k=1"),
            Self::OipJson | Self::OipBinary => format!("/v2/models/{model}/infer"),
        }
    }

    /// The request body for one input. `input_name` is the OIP input
    /// tensor's name (unused by REST, which takes the raw image).
    pub fn payload(self, input_name: &str, tensor: Tensor<'_>) -> Payload {
        match (self, tensor) {
            (Self::Rest, Tensor::Bytes(image)) => Payload {
                body: Bytes::copy_from_slice(image),
                content_type: "application/octet-stream",
                header_length: None,
            },
            (Self::Rest, Tensor::Fp32 { .. }) => {
                unreachable!("the command line rejects REST with FP32 tensors")
            }
            (Self::OipJson, tensor) => {
                let input = match tensor {
                    // NOTE: JSON BYTES elements are strings; an encoded image
                    // is not UTF-8, so it travels base64-encoded and says so
                    // in the tensor's parameters.
                    Tensor::Bytes(image) => json!({
                        "name": input_name,
                        "shape": [1],
                        "datatype": "BYTES",
                        "parameters": {"content_type": "base64"},
                        "data": [base64::engine::general_purpose::STANDARD.encode(image)],
                    }),
                    Tensor::Fp32 { data, resolution } => json!({
                        "name": input_name,
                        "shape": [1, 3, resolution, resolution],
                        "datatype": "FP32",
                        "data": data,
                    }),
                };
                let body = serde_json::to_vec(&json!({"inputs": [input]}))
                    .expect("JSON of strings and numbers serializes");
                Payload {
                    body: body.into(),
                    content_type: "application/json",
                    header_length: None,
                }
            }
            (Self::OipBinary, tensor) => {
                let (shape, datatype, data) = match tensor {
                    // A BYTES element is its length (u32, little-endian)
                    // followed by its bytes.
                    Tensor::Bytes(image) => {
                        let mut data = Vec::with_capacity(4 + image.len());
                        data.extend_from_slice(&(image.len() as u32).to_le_bytes());
                        data.extend_from_slice(image);
                        (vec![1], "BYTES", data)
                    }
                    Tensor::Fp32 { data, resolution } => {
                        let r = resolution as usize;
                        let bytes = data.iter().flat_map(|v| v.to_le_bytes()).collect();
                        (vec![1, 3, r, r], "FP32", bytes)
                    }
                };
                let header = serde_json::to_vec(&json!({
                    "inputs": [{
                        "name": input_name,
                        "shape": shape,
                        "datatype": datatype,
                        "parameters": {"binary_data_size": data.len()},
                    }],
                }))
                .expect("JSON of strings and numbers serializes");
                let header_length = header.len();
                let mut body = header;
                body.extend_from_slice(&data);
                Payload {
                    body: body.into(),
                    content_type: "application/octet-stream",
                    header_length: Some(header_length),
                }
            }
        }
    }

    /// Checks that a 2xx response body carries a result: a top class for
    /// REST, at least one output tensor for OIP. `header_length` is the
    /// response's `Inference-Header-Content-Length`, if any.
    pub fn check(self, body: &[u8], header_length: Option<usize>) -> Result<(), &'static str> {
        let json_part = match header_length {
            Some(n) if n <= body.len() => &body[..n],
            Some(_) => return Err("invalid response"),
            None => body,
        };
        let value: serde_json::Value =
            serde_json::from_slice(json_part).map_err(|_| "invalid response")?;
        let ok = match self {
            Self::Rest => value["results"][0]["classes"][0]["index"].is_u64(),
            Self::OipJson | Self::OipBinary => value["outputs"]
                .as_array()
                .is_some_and(|outputs| !outputs.is_empty()),
        };
        if ok { Ok(()) } else { Err("invalid response") }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn binary_bytes_layout() {
        let payload = Protocol::OipBinary.payload("input", Tensor::Bytes(b"abc"));
        let n = payload.header_length.unwrap();
        let header: serde_json::Value = serde_json::from_slice(&payload.body[..n]).unwrap();

        assert_eq!(header["inputs"][0]["parameters"]["binary_data_size"], 7);
        assert_eq!(header["inputs"][0]["datatype"], "BYTES");
        assert_eq!(&payload.body[n..], b"\x03\0\0\0abc");
    }

    #[test]
    fn binary_fp32_layout() {
        let data = [1.0f32, -2.0, 0.5];
        let payload = Protocol::OipBinary.payload(
            "x",
            Tensor::Fp32 {
                data: &data,
                resolution: 1,
            },
        );
        let n = payload.header_length.unwrap();
        let header: serde_json::Value = serde_json::from_slice(&payload.body[..n]).unwrap();

        assert_eq!(header["inputs"][0]["shape"], json!([1, 3, 1, 1]));
        assert_eq!(payload.body.len() - n, 12);
        assert_eq!(&payload.body[n..n + 4], &1.0f32.to_le_bytes());
    }

    #[test]
    fn json_bytes_base64() {
        let payload = Protocol::OipJson.payload("input", Tensor::Bytes(b"\xff\xd8"));
        let body: serde_json::Value = serde_json::from_slice(&payload.body).unwrap();

        assert_eq!(body["inputs"][0]["data"][0], "/9g=");
        assert_eq!(payload.header_length, None);
    }

    #[test]
    fn rest_check() {
        let body = br#"{"results":[{"classes":[{"index":1}]}]}"#;

        assert_eq!(Protocol::Rest.check(body, None), Ok(()));
        assert!(Protocol::Rest.check(b"{}", None).is_err());
    }

    #[test]
    fn oip_check_header_part() {
        let mut body = br#"{"outputs":[{"name":"logits"}]}"#.to_vec();
        let n = body.len();
        body.extend_from_slice(&[0, 1, 2, 3]);

        assert_eq!(Protocol::OipBinary.check(&body, Some(n)), Ok(()));
        assert!(Protocol::OipBinary.check(&body, None).is_err());
    }
}
