//! Requests of each protocol, prepared once before the run, and the check
//! of a successful response.
//!
//! Open Inference Protocol (KServe v2) requests carry either the encoded
//! image as a BYTES tensor of shape `[1]` or the preprocessed FP32 tensor
//! `[1, 3, R, R]` (decoded here with the server's own preprocessing). Over
//! HTTP the tensor travels in the JSON body or with the binary tensor
//! extension: a JSON header of `Inference-Header-Content-Length` bytes
//! followed by the raw tensor data. Over gRPC it travels in
//! `raw_input_contents`, as Triton's clients send it.

use bytes::Bytes;
use effnet_proto::{
    effnet::v1::{ClassifyRequest, ClassifyResponse},
    inference::{ModelInferRequest, ModelInferResponse, model_infer_request::InferInputTensor},
};
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
    /// `effnet.v1.Classifier/Classify` over gRPC, one encoded image.
    GrpcClassify,
    /// Open Inference Protocol over gRPC (`ModelInfer`), raw tensor contents.
    OipGrpc,
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

/// One ready request. The gRPC messages leave the model name empty; the
/// sender fills it in, so that one message serves every model of the mix.
#[derive(Debug, Clone)]
pub enum Payload {
    Http {
        body: Bytes,
        content_type: &'static str,
        /// Length of the JSON header of a binary-extension body.
        header_length: Option<usize>,
    },
    Classify(ClassifyRequest),
    ModelInfer(ModelInferRequest),
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
            Self::GrpcClassify => "grpc-classify",
            Self::OipGrpc => "oip-grpc",
        }
    }

    pub fn is_grpc(self) -> bool {
        matches!(self, Self::GrpcClassify | Self::OipGrpc)
    }

    /// Returns whether the protocol can carry `input`. REST and gRPC
    /// classify take encoded images only, and JSON cannot carry one (see
    /// [`Self::payload`]).
    pub fn accepts(self, input: OipInput) -> bool {
        match self {
            Self::Rest | Self::GrpcClassify => input == OipInput::Bytes,
            Self::OipJson => input == OipInput::Fp32,
            Self::OipBinary | Self::OipGrpc => true,
        }
    }

    /// URL path of the model's HTTP endpoint; gRPC methods have fixed paths.
    pub fn path(self, model: &str) -> String {
        match self {
            Self::Rest => format!("/v1/models/{model}/classify?top_k=1"),
            Self::OipJson | Self::OipBinary => format!("/v2/models/{model}/infer"),
            Self::GrpcClassify | Self::OipGrpc => String::new(),
        }
    }

    /// Builds the request for one input. `input_name` is the OIP input
    /// tensor's name (unused by REST and gRPC classify, which take the raw
    /// image).
    ///
    /// The tensor must be one that [`Self::accepts`]: the server reads a
    /// JSON BYTES element as the string's UTF-8 bytes, so an encoded image,
    /// which is not UTF-8, cannot travel in JSON.
    pub fn payload(self, input_name: &str, tensor: Tensor<'_>) -> Payload {
        match (self, tensor) {
            (Self::Rest, Tensor::Bytes(image)) => Payload::Http {
                body: Bytes::copy_from_slice(image),
                content_type: "application/octet-stream",
                header_length: None,
            },
            (Self::GrpcClassify, Tensor::Bytes(image)) => Payload::Classify(ClassifyRequest {
                model: String::new(),
                image: Bytes::copy_from_slice(image),
                top_k: 1,
            }),
            (Self::OipJson, Tensor::Fp32 { data, resolution }) => {
                json_payload(input_name, data, resolution)
            }
            (Self::Rest | Self::GrpcClassify, Tensor::Fp32 { .. })
            | (Self::OipJson, Tensor::Bytes(_)) => {
                unreachable!("the command line rejects inputs the protocol cannot carry")
            }
            (Self::OipBinary, tensor) => binary_payload(input_name, tensor),
            (Self::OipGrpc, tensor) => {
                let (shape, datatype, raw) = raw_tensor(tensor);
                Payload::ModelInfer(ModelInferRequest {
                    inputs: vec![InferInputTensor {
                        name: input_name.to_string(),
                        datatype: datatype.to_string(),
                        shape,
                        ..Default::default()
                    }],
                    raw_input_contents: vec![raw.into()],
                    ..Default::default()
                })
            }
        }
    }

    /// Checks that a 2xx HTTP response body carries a result: a top class
    /// for REST, at least one output tensor for OIP. `header_length` is the
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
            Self::GrpcClassify | Self::OipGrpc => false,
        };
        if ok { Ok(()) } else { Err("invalid response") }
    }
}

/// Checks that a classify response has a top class for its image.
pub fn check_classify(response: &ClassifyResponse) -> Result<(), &'static str> {
    match response.results.first() {
        Some(result) if !result.classes.is_empty() => Ok(()),
        _ => Err("invalid response"),
    }
}

/// Checks that an inference response has an output tensor with its raw contents.
pub fn check_model_infer(response: &ModelInferResponse) -> Result<(), &'static str> {
    let has_output = !response.outputs.is_empty();
    let has_contents = response.raw_output_contents.len() == response.outputs.len();
    if has_output && has_contents {
        Ok(())
    } else {
        Err("invalid response")
    }
}

/// Returns the shape, datatype and raw tensor data of one input. A BYTES
/// element is its length (u32, little-endian) followed by its bytes, and
/// FP32 values are little-endian.
fn raw_tensor(tensor: Tensor<'_>) -> (Vec<i64>, &'static str, Vec<u8>) {
    match tensor {
        Tensor::Bytes(image) => {
            let mut data = Vec::with_capacity(4 + image.len());
            data.extend_from_slice(&(image.len() as u32).to_le_bytes());
            data.extend_from_slice(image);
            (vec![1], "BYTES", data)
        }
        Tensor::Fp32 { data, resolution } => {
            let r = i64::from(resolution);
            let bytes = data.iter().flat_map(|v| v.to_le_bytes()).collect();
            (vec![1, 3, r, r], "FP32", bytes)
        }
    }
}

/// Builds a JSON body with one preprocessed FP32 image.
fn json_payload(input_name: &str, data: &[f32], resolution: u32) -> Payload {
    let input = json!({
        "name": input_name,
        "shape": [1, 3, resolution, resolution],
        "datatype": "FP32",
        "data": data,
    });
    let body = serde_json::to_vec(&json!({"inputs": [input]}))
        .expect("JSON of strings and numbers serializes");
    Payload::Http {
        body: body.into(),
        content_type: "application/json",
        header_length: None,
    }
}

/// Builds a binary tensor extension body: the JSON header, then the raw data.
fn binary_payload(input_name: &str, tensor: Tensor<'_>) -> Payload {
    let (shape, datatype, data) = raw_tensor(tensor);
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
    Payload::Http {
        body: body.into(),
        content_type: "application/octet-stream",
        header_length: Some(header_length),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Returns the body and header length of an HTTP payload.
    fn http(payload: &Payload) -> (&Bytes, Option<usize>) {
        match payload {
            Payload::Http {
                body,
                header_length,
                ..
            } => (body, *header_length),
            other => panic!("expected an HTTP payload, got {other:?}"),
        }
    }

    #[test]
    fn binary_bytes_layout() {
        let payload = Protocol::OipBinary.payload("input", Tensor::Bytes(b"abc"));
        let (body, header_length) = http(&payload);
        let n = header_length.unwrap();
        let header: serde_json::Value = serde_json::from_slice(&body[..n]).unwrap();

        assert_eq!(header["inputs"][0]["parameters"]["binary_data_size"], 7);
        assert_eq!(header["inputs"][0]["datatype"], "BYTES");
        assert_eq!(&body[n..], b"\x03\0\0\0abc");
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
        let (body, header_length) = http(&payload);
        let n = header_length.unwrap();
        let header: serde_json::Value = serde_json::from_slice(&body[..n]).unwrap();

        assert_eq!(header["inputs"][0]["shape"], json!([1, 3, 1, 1]));
        assert_eq!(body.len() - n, 12);
        assert_eq!(&body[n..n + 4], &1.0f32.to_le_bytes());
    }

    #[test]
    fn json_fp32_inline() {
        let data = [0.5f32, 1.0, -1.0];
        let payload = Protocol::OipJson.payload(
            "input",
            Tensor::Fp32 {
                data: &data,
                resolution: 1,
            },
        );
        let (body, header_length) = http(&payload);
        let body: serde_json::Value = serde_json::from_slice(body).unwrap();

        assert_eq!(body["inputs"][0]["datatype"], "FP32");
        assert_eq!(body["inputs"][0]["shape"], json!([1, 3, 1, 1]));
        assert_eq!(body["inputs"][0]["data"], json!([0.5, 1.0, -1.0]));
        assert_eq!(header_length, None);
    }

    #[test]
    fn accepted_inputs() {
        assert!(!Protocol::OipJson.accepts(OipInput::Bytes));
        assert!(Protocol::OipJson.accepts(OipInput::Fp32));
        assert!(!Protocol::Rest.accepts(OipInput::Fp32));
        assert!(!Protocol::GrpcClassify.accepts(OipInput::Fp32));
        assert!(Protocol::OipGrpc.accepts(OipInput::Bytes));
        assert!(Protocol::OipGrpc.accepts(OipInput::Fp32));
    }

    #[test]
    fn grpc_classify_request() {
        let payload = Protocol::GrpcClassify.payload("input", Tensor::Bytes(b"\xff\xd8"));

        let Payload::Classify(request) = payload else {
            panic!("expected a classify request, got {payload:?}")
        };
        assert_eq!(&request.image[..], b"\xff\xd8");
        assert_eq!(request.top_k, 1);
        assert!(request.model.is_empty());
    }

    #[test]
    fn grpc_infer_bytes_request() {
        let payload = Protocol::OipGrpc.payload("input", Tensor::Bytes(b"abc"));

        let Payload::ModelInfer(request) = payload else {
            panic!("expected an inference request, got {payload:?}")
        };
        assert_eq!(request.inputs.len(), 1);
        assert_eq!(request.inputs[0].name, "input");
        assert_eq!(request.inputs[0].datatype, "BYTES");
        assert_eq!(request.inputs[0].shape, vec![1]);
        assert_eq!(request.raw_input_contents.len(), 1);
        assert_eq!(&request.raw_input_contents[0][..], b"\x03\0\0\0abc");
    }

    #[test]
    fn grpc_infer_fp32_request() {
        let data = [1.0f32, -2.0, 0.5];
        let payload = Protocol::OipGrpc.payload(
            "x",
            Tensor::Fp32 {
                data: &data,
                resolution: 1,
            },
        );

        let Payload::ModelInfer(request) = payload else {
            panic!("expected an inference request, got {payload:?}")
        };
        assert_eq!(request.inputs[0].datatype, "FP32");
        assert_eq!(request.inputs[0].shape, vec![1, 3, 1, 1]);
        assert_eq!(request.raw_input_contents[0].len(), 12);
        assert_eq!(
            &request.raw_input_contents[0][4..8],
            &(-2.0f32).to_le_bytes()
        );
    }

    #[test]
    fn grpc_infer_check() {
        let mut response = ModelInferResponse {
            outputs: vec![Default::default()],
            ..Default::default()
        };

        assert!(check_model_infer(&response).is_err());
        response
            .raw_output_contents
            .push(Bytes::from_static(&[0; 4]));
        assert_eq!(check_model_infer(&response), Ok(()));
        assert!(check_model_infer(&ModelInferResponse::default()).is_err());
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
