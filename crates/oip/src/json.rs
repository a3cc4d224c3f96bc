//! The HTTP/REST body of an inference request: JSON, optionally followed by
//! binary tensor data (Triton's binary tensor data extension).
//!
//! With the extension, the `Inference-Header-Content-Length` HTTP header
//! gives the length of the JSON part. Each input that carries binary data
//! declares its byte count in the `binary_data_size` parameter, and the
//! inputs take consecutive slices of the data in order.

use std::{collections::HashMap, fmt};

use bytes::Bytes;
use serde::{
    Deserialize, Deserializer,
    de::{self, DeserializeSeed, SeqAccess, Visitor},
};
use serde_json::Value;

use crate::{Error, InferInput, RequestedOutput, TensorData};

/// A parsed inference request body.
#[derive(Debug)]
pub struct JsonRequest {
    /// The client's request id, echoed in the response; may be empty.
    pub id: String,
    pub inputs: Vec<InferInput>,
    /// Empty means every output, as the protocol specifies.
    pub outputs: Vec<RequestedOutput>,
    /// The request parameter `binary_data_output`: return every output as
    /// binary tensor data.
    pub binary_output: bool,
}

/// Splits `body` into the JSON header (the first `header_length` bytes, or
/// all of it) and the binary tensor data, and gives each input declaring
/// `binary_data_size` its slice of the data.
///
/// Every byte of binary data must belong to exactly one input.
pub fn parse_request(body: Bytes, header_length: Option<usize>) -> Result<JsonRequest, Error> {
    let header_length = header_length.unwrap_or(body.len());
    if header_length > body.len() {
        return Err(Error::invalid(
            "invalid_header",
            format!(
                "inference-header-content-length {header_length} exceeds the body of {} bytes",
                body.len()
            ),
        ));
    }
    let mut binary = body.slice(header_length..);
    let parsed: WireRequest = serde_json::from_slice(&body[..header_length]).map_err(|e| {
        Error::invalid(
            "invalid_json",
            format!("invalid inference request JSON: {e}"),
        )
    })?;

    let mut inputs = Vec::with_capacity(parsed.inputs.len());
    for input in parsed.inputs {
        let data = input_data(
            &input.name,
            input.parameters.get("binary_data_size"),
            input.data,
            &mut binary,
        )?;
        inputs.push(InferInput {
            name: input.name,
            datatype: input.datatype,
            shape: input.shape,
            data,
        });
    }
    if !binary.is_empty() {
        return Err(Error::invalid(
            "invalid_byte_length",
            format!(
                "{} bytes of binary data after the JSON header belong to no input",
                binary.len()
            ),
        ));
    }

    let binary_output = parsed
        .parameters
        .get("binary_data_output")
        .and_then(Value::as_bool)
        == Some(true);
    let outputs = parsed
        .outputs
        .into_iter()
        .map(|output| requested_output(output, binary_output))
        .collect::<Result<Vec<_>, Error>>()?;

    Ok(JsonRequest {
        id: parsed.id,
        inputs,
        outputs,
        binary_output,
    })
}

/// Returns an input's elements: its JSON `data`, or the next
/// `binary_data_size` bytes of `binary`, never both.
fn input_data(
    name: &str,
    binary_size: Option<&Value>,
    data: Option<FlatData>,
    binary: &mut Bytes,
) -> Result<TensorData, Error> {
    match (binary_size, data) {
        (Some(size), None) => {
            let size = size.as_u64().ok_or_else(|| {
                Error::invalid("invalid_parameter", "binary_data_size must be a byte count")
            })?;
            if size > binary.len() as u64 {
                return Err(Error::invalid(
                    "invalid_byte_length",
                    format!(
                        "input {name:?} declares {size} bytes of binary data but only {} remain",
                        binary.len()
                    ),
                ));
            }
            Ok(TensorData::Raw(binary.split_to(size as usize)))
        }
        (None, Some(FlatData::Numbers(values))) => Ok(TensorData::Fp32(values)),
        (None, Some(FlatData::Strings(strings))) => Ok(TensorData::Bytes(strings)),
        (Some(_), Some(_)) => Err(Error::invalid(
            "invalid_input",
            format!("input {name:?} has both data and binary_data_size"),
        )),
        (None, None) => Err(Error::invalid(
            "invalid_input",
            format!("input {name:?} has neither data nor binary_data_size"),
        )),
    }
}

fn requested_output(output: WireOutput, binary_output: bool) -> Result<RequestedOutput, Error> {
    let classification = match output.parameters.get("classification") {
        None => None,
        Some(k) => Some(k.as_u64().filter(|&k| k <= 1000).ok_or_else(|| {
            Error::invalid(
                "invalid_classification",
                "classification must be an integer from 1 to 1000",
            )
        })? as usize),
    };
    let binary_data = output
        .parameters
        .get("binary_data")
        .and_then(Value::as_bool)
        .unwrap_or(binary_output);
    Ok(RequestedOutput {
        name: output.name,
        classification,
        binary_data,
    })
}

#[derive(Debug, Deserialize)]
struct WireRequest {
    #[serde(default)]
    id: String,
    #[serde(default)]
    parameters: HashMap<String, Value>,
    inputs: Vec<WireInput>,
    #[serde(default)]
    outputs: Vec<WireOutput>,
}

#[derive(Debug, Deserialize)]
struct WireInput {
    name: String,
    shape: Vec<i64>,
    datatype: String,
    #[serde(default)]
    parameters: HashMap<String, Value>,
    #[serde(default)]
    data: Option<FlatData>,
}

#[derive(Debug, Deserialize)]
struct WireOutput {
    name: String,
    #[serde(default)]
    parameters: HashMap<String, Value>,
}

/// A JSON tensor's `data`: nested or flat arrays of numbers or of strings,
/// flattened in row-major order while parsing, so that no intermediate
/// `serde_json::Value` per element is built.
#[derive(Debug)]
enum FlatData {
    Numbers(Vec<f32>),
    Strings(Vec<Bytes>),
}

// === impl FlatData ===

impl<'de> Deserialize<'de> for FlatData {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let mut data = None;
        deserializer.deserialize_seq(Flatten { data: &mut data })?;
        Ok(data.unwrap_or(FlatData::Numbers(Vec::new())))
    }
}

/// Appends the elements of one (possibly nested) array to `data`.
///
/// Nesting depth is bounded by `serde_json`'s recursion limit.
struct Flatten<'a> {
    data: &'a mut Option<FlatData>,
}

// === impl Flatten ===

impl<'de> DeserializeSeed<'de> for Flatten<'_> {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Flatten<'_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("an array of numbers or of strings, flat or nested")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        while seq
            .next_element_seed(Flatten {
                data: &mut *self.data,
            })?
            .is_some()
        {}
        Ok(())
    }

    fn visit_f64<E: de::Error>(self, value: f64) -> Result<(), E> {
        match self.data.get_or_insert(FlatData::Numbers(Vec::new())) {
            FlatData::Numbers(values) => {
                values.push(value as f32);
                Ok(())
            }
            FlatData::Strings(_) => Err(E::custom("data mixes numbers and strings")),
        }
    }

    fn visit_i64<E: de::Error>(self, value: i64) -> Result<(), E> {
        self.visit_f64(value as f64)
    }

    fn visit_u64<E: de::Error>(self, value: u64) -> Result<(), E> {
        self.visit_f64(value as f64)
    }

    fn visit_str<E: de::Error>(self, value: &str) -> Result<(), E> {
        match self.data.get_or_insert(FlatData::Strings(Vec::new())) {
            FlatData::Strings(strings) => {
                strings.push(Bytes::copy_from_slice(value.as_bytes()));
                Ok(())
            }
            FlatData::Numbers(_) => Err(E::custom("data mixes numbers and strings")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nested_data_is_flattened() {
        let data: FlatData = serde_json::from_str("[[1, 2.5], [3, -4]]").unwrap();

        let FlatData::Numbers(values) = data else {
            panic!("expected numbers")
        };
        assert_eq!(values, vec![1.0, 2.5, 3.0, -4.0]);
    }

    #[test]
    fn mixed_data_is_rejected() {
        assert!(serde_json::from_str::<FlatData>(r#"[1, "a"]"#).is_err());
    }

    #[test]
    fn deep_nesting_is_an_error() {
        let deep = format!("{}1{}", "[".repeat(10_000), "]".repeat(10_000));

        assert!(serde_json::from_str::<FlatData>(&deep).is_err());
    }

    #[test]
    fn binary_input_gets_its_slice() {
        let header = r#"{"inputs":[{"name":"input","shape":[1],"datatype":"BYTES","parameters":{"binary_data_size":3}}]}"#;
        let body = Bytes::from(format!("{header}abc"));

        let parsed = parse_request(body, Some(header.len())).unwrap();

        let TensorData::Raw(raw) = &parsed.inputs[0].data else {
            panic!("expected raw data")
        };
        assert_eq!(&raw[..], b"abc");
    }

    #[test]
    fn binary_size_past_end() {
        let header = r#"{"inputs":[{"name":"input","shape":[1],"datatype":"BYTES","parameters":{"binary_data_size":9}}]}"#;
        let body = Bytes::from(format!("{header}abc"));

        let error = parse_request(body, Some(header.len())).unwrap_err();

        assert_eq!(error.code, "invalid_byte_length");
    }

    #[test]
    fn trailing_binary_is_rejected() {
        let header = r#"{"inputs":[{"name":"input","shape":[1],"datatype":"FP32","data":[1]}]}"#;
        let body = Bytes::from(format!("{header}xyz"));

        let error = parse_request(body, Some(header.len())).unwrap_err();

        assert_eq!(error.code, "invalid_byte_length");
    }

    #[test]
    fn header_length_past_body() {
        let error = parse_request(Bytes::from_static(b"{}"), Some(10)).unwrap_err();

        assert_eq!(error.code, "invalid_header");
    }

    #[test]
    fn binary_data_output_applies_to_every_output() {
        let body = r#"{"parameters":{"binary_data_output":true},"inputs":[{"name":"input","shape":[1],"datatype":"BYTES","data":["a"]}],"outputs":[{"name":"logits"},{"name":"logits","parameters":{"binary_data":false,"classification":3}}]}"#;

        let parsed = parse_request(Bytes::from(body), None).unwrap();

        assert!(parsed.binary_output);
        assert!(parsed.outputs[0].binary_data);
        assert!(!parsed.outputs[1].binary_data);
        assert_eq!(parsed.outputs[1].classification, Some(3));
    }
}
