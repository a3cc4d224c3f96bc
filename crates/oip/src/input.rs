//! Checks of an inference request against the model it addresses.

use bytes::Bytes;

use crate::{
    BYTES_LENGTH_PREFIX, Error, FP32_SIZE, INPUT_NAME, InferInput, OUTPUT_NAME, RequestedOutput,
    TensorData, truncate,
};

/// The input constraints of a model: `[N, 3, resolution, resolution]` FP32
/// tensors or `N` encoded images, with `N` at most `max_images`.
#[derive(Debug, Clone, Copy)]
pub struct InputSpec {
    pub resolution: usize,
    pub max_images: usize,
}

/// The images of a checked request.
#[derive(Debug, PartialEq)]
pub enum Images {
    /// Preprocessed CHW tensors, one per image, each of
    /// `3 * resolution * resolution` values.
    Tensors(Vec<Vec<f32>>),
    /// Encoded image files, to be decoded like the REST API's uploads.
    Encoded(Vec<Bytes>),
}

/// Checks the request's one input (named [`INPUT_NAME`], FP32 or BYTES)
/// against `spec` and splits it into images.
pub fn check_input(inputs: Vec<InferInput>, spec: InputSpec) -> Result<Images, Error> {
    let [input]: [InferInput; 1] = inputs.try_into().map_err(|inputs: Vec<InferInput>| {
        Error::invalid(
            "invalid_inputs",
            format!(
                "expected exactly one input named {INPUT_NAME:?}, got {}",
                inputs.len()
            ),
        )
    })?;
    if input.name != INPUT_NAME {
        return Err(Error::invalid(
            "unknown_input",
            format!(
                "unknown input {:?}; the model's input is {INPUT_NAME:?}",
                truncate(&input.name)
            ),
        ));
    }

    match input.datatype.as_str() {
        "FP32" => {
            let count = check_fp32_shape(&input.shape, spec)?;
            let image_len = 3 * spec.resolution * spec.resolution;
            fp32_images(input.data, count, image_len).map(Images::Tensors)
        }
        "BYTES" => {
            let count = check_bytes_shape(&input.shape, spec.max_images)?;
            bytes_elements(input.data, count).map(Images::Encoded)
        }
        other => Err(Error::invalid(
            "invalid_datatype",
            format!(
                "input {INPUT_NAME:?} must be FP32 or BYTES, got {:?}",
                truncate(other)
            ),
        )),
    }
}

/// Checks the requested outputs and returns them, or `logits` when the
/// client named none (the protocol's "every output").
pub fn check_outputs(requested: &[RequestedOutput]) -> Result<Vec<RequestedOutput>, Error> {
    if requested.is_empty() {
        return Ok(vec![RequestedOutput {
            name: OUTPUT_NAME.to_string(),
            classification: None,
            binary_data: false,
        }]);
    }
    for output in requested {
        if output.name != OUTPUT_NAME {
            return Err(Error::invalid(
                "unknown_output",
                format!(
                    "unknown output {:?}; the model's output is {OUTPUT_NAME:?}",
                    truncate(&output.name)
                ),
            ));
        }
        if output.classification == Some(0) {
            return Err(Error::invalid(
                "invalid_classification",
                "classification must be at least 1",
            ));
        }
    }
    Ok(requested.to_vec())
}

/// Checks an FP32 shape against `[N, 3, R, R]` and returns N.
fn check_fp32_shape(shape: &[i64], spec: InputSpec) -> Result<usize, Error> {
    let resolution = spec.resolution as i64;
    if shape.len() != 4 || shape[1..] != [3, resolution, resolution] {
        return Err(Error::invalid(
            "invalid_shape",
            format!("FP32 input shape must be [N, 3, {resolution}, {resolution}], got {shape:?}"),
        ));
    }
    check_batch(shape[0], spec.max_images)
}

/// Checks a BYTES shape, `[N]` or `[N, 1]`, and returns N.
fn check_bytes_shape(shape: &[i64], max_images: usize) -> Result<usize, Error> {
    match shape {
        [n] | [n, 1] => check_batch(*n, max_images),
        _ => Err(Error::invalid(
            "invalid_shape",
            format!("BYTES input shape must be [N] or [N, 1], got {shape:?}"),
        )),
    }
}

fn check_batch(n: i64, max_images: usize) -> Result<usize, Error> {
    if n < 0 {
        return Err(Error::invalid(
            "invalid_shape",
            format!("negative batch dimension {n}"),
        ));
    }
    if n == 0 {
        return Err(Error::invalid("no_image", "the batch dimension is 0"));
    }
    if n as u64 > max_images as u64 {
        return Err(Error::too_large(
            "too_many_images",
            format!("the request has {n} images; the limit is {max_images}"),
        ));
    }
    Ok(n as usize)
}

/// Splits FP32 data into `count` images of `image_len` values each, after
/// checking that the data contains exactly that many elements.
fn fp32_images(data: TensorData, count: usize, image_len: usize) -> Result<Vec<Vec<f32>>, Error> {
    let elements = count * image_len;
    match data {
        TensorData::Raw(raw) => {
            if raw.len() != elements * FP32_SIZE {
                return Err(byte_length_mismatch(elements * FP32_SIZE, raw.len()));
            }
            let images: Vec<Vec<f32>> = raw
                .chunks_exact(image_len * FP32_SIZE)
                .map(|image| {
                    image
                        .chunks_exact(FP32_SIZE)
                        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                        .collect()
                })
                .collect();
            check_finite(images.iter().flatten())?;
            Ok(images)
        }
        TensorData::Fp32(values) => {
            if values.len() != elements {
                return Err(element_count_mismatch(elements, values.len()));
            }
            check_finite(&values)?;
            Ok(values
                .chunks_exact(image_len)
                .map(<[f32]>::to_vec)
                .collect())
        }
        TensorData::Bytes(_) => Err(Error::invalid(
            "invalid_datatype",
            "input declared FP32 but carries BYTES contents",
        )),
    }
}

/// Rejects NaN and infinite values, which a model turns into NaN logits or
/// arbitrary classes.
fn check_finite<'a>(values: impl IntoIterator<Item = &'a f32>) -> Result<(), Error> {
    match values.into_iter().enumerate().find(|(_, v)| !v.is_finite()) {
        None => Ok(()),
        Some((index, value)) => Err(Error::invalid(
            "non_finite_input",
            format!("input element {index} is {value}, but FP32 inputs must be finite numbers"),
        )),
    }
}

/// Returns the `count` encoded images of BYTES data, after checking that the
/// data contains exactly that many elements.
fn bytes_elements(data: TensorData, count: usize) -> Result<Vec<Bytes>, Error> {
    match data {
        TensorData::Raw(raw) => {
            let mut images = Vec::with_capacity(count);
            let mut rest = raw;
            while !rest.is_empty() {
                if rest.len() < BYTES_LENGTH_PREFIX {
                    return Err(Error::invalid(
                        "invalid_byte_length",
                        "BYTES data ends inside an element's 4-byte length prefix",
                    ));
                }
                let length = u32::from_le_bytes([rest[0], rest[1], rest[2], rest[3]]) as usize;
                let available = rest.len() - BYTES_LENGTH_PREFIX;
                if length > available {
                    return Err(Error::invalid(
                        "invalid_byte_length",
                        format!(
                            "BYTES element {} declares {length} bytes but only {available} remain",
                            images.len()
                        ),
                    ));
                }
                if images.len() == count {
                    return Err(Error::invalid(
                        "invalid_element_count",
                        format!("BYTES data holds more than the {count} elements of the shape"),
                    ));
                }
                let _ = rest.split_to(BYTES_LENGTH_PREFIX);
                images.push(rest.split_to(length));
            }
            if images.len() != count {
                return Err(element_count_mismatch(count, images.len()));
            }
            Ok(images)
        }
        TensorData::Bytes(elements) => {
            if elements.len() != count {
                return Err(element_count_mismatch(count, elements.len()));
            }
            Ok(elements)
        }
        TensorData::Fp32(_) => Err(Error::invalid(
            "invalid_datatype",
            "input declared BYTES but carries FP32 contents",
        )),
    }
}

fn byte_length_mismatch(expected: usize, actual: usize) -> Error {
    Error::invalid(
        "invalid_byte_length",
        format!("input data is {actual} bytes; the shape and datatype need {expected}"),
    )
}

fn element_count_mismatch(expected: usize, actual: usize) -> Error {
    Error::invalid(
        "invalid_element_count",
        format!("input has {actual} elements; the shape needs {expected}"),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ErrorKind;

    const SPEC: InputSpec = InputSpec {
        resolution: 224,
        max_images: 64,
    };

    fn raw_bytes(elements: &[&[u8]]) -> Bytes {
        let mut raw = Vec::new();
        for e in elements {
            raw.extend_from_slice(&(e.len() as u32).to_le_bytes());
            raw.extend_from_slice(e);
        }
        Bytes::from(raw)
    }

    fn input(name: &str, datatype: &str, shape: &[i64], data: TensorData) -> InferInput {
        InferInput {
            name: name.into(),
            datatype: datatype.into(),
            shape: shape.to_vec(),
            data,
        }
    }

    #[test]
    fn fp32_shape_valid() {
        assert_eq!(check_fp32_shape(&[2, 3, 224, 224], SPEC).unwrap(), 2);
    }

    #[test]
    fn fp32_shape_wrong_resolution() {
        let error = check_fp32_shape(&[1, 3, 240, 240], SPEC).unwrap_err();

        assert_eq!(error.code, "invalid_shape");
    }

    #[test]
    fn batch_over_limit() {
        let error = check_fp32_shape(&[65, 3, 224, 224], SPEC).unwrap_err();

        assert_eq!(error.kind, ErrorKind::TooLarge);
    }

    #[test]
    fn batch_huge_does_not_overflow() {
        let error = check_bytes_shape(&[i64::MAX], 64).unwrap_err();

        assert_eq!(error.kind, ErrorKind::TooLarge);
    }

    #[test]
    fn batch_zero() {
        let error = check_bytes_shape(&[0], 64).unwrap_err();

        assert_eq!(error.code, "no_image");
    }

    #[test]
    fn bytes_shape_column() {
        assert_eq!(check_bytes_shape(&[3, 1], 64).unwrap(), 3);
        assert!(check_bytes_shape(&[3, 2], 64).is_err());
    }

    #[test]
    fn fp32_raw_length_mismatch() {
        let error = fp32_images(TensorData::Raw(Bytes::from(vec![0u8; 11])), 1, 3).unwrap_err();

        assert_eq!(error.code, "invalid_byte_length");
    }

    #[test]
    fn fp32_raw_splits_images() {
        let raw: Vec<u8> = [1.0f32, 2.0, 3.0, 4.0]
            .iter()
            .flat_map(|v| v.to_le_bytes())
            .collect();

        let images = fp32_images(TensorData::Raw(Bytes::from(raw)), 2, 2).unwrap();

        assert_eq!(images, vec![vec![1.0, 2.0], vec![3.0, 4.0]]);
    }

    #[test]
    fn non_finite_values_rejected() {
        let raw: Vec<u8> = [1.0f32, f32::NAN]
            .iter()
            .flat_map(|v| v.to_le_bytes())
            .collect();

        let nan = fp32_images(TensorData::Raw(Bytes::from(raw)), 1, 2).unwrap_err();
        let infinite = fp32_images(TensorData::Fp32(vec![f32::INFINITY, 0.0]), 1, 2).unwrap_err();

        assert_eq!(nan.code, "non_finite_input");
        assert!(nan.message.contains("element 1 is NaN"), "{}", nan.message);
        assert_eq!(infinite.code, "non_finite_input");
    }

    #[test]
    fn bytes_raw_parses_elements() {
        let images = bytes_elements(TensorData::Raw(raw_bytes(&[b"ab", b"cde"])), 2).unwrap();

        assert_eq!(
            images,
            vec![Bytes::from_static(b"ab"), Bytes::from_static(b"cde")]
        );
    }

    #[test]
    fn bytes_raw_length_past_end() {
        let mut raw = raw_bytes(&[b"ab"]).to_vec();
        raw[0] = 200;

        let error = bytes_elements(TensorData::Raw(Bytes::from(raw)), 1).unwrap_err();

        assert_eq!(error.code, "invalid_byte_length");
    }

    #[test]
    fn bytes_raw_too_many_elements() {
        let error = bytes_elements(TensorData::Raw(raw_bytes(&[b"a", b"b"])), 1).unwrap_err();

        assert_eq!(error.code, "invalid_element_count");
    }

    #[test]
    fn bytes_raw_too_few_elements() {
        let error = bytes_elements(TensorData::Raw(raw_bytes(&[b"a"])), 2).unwrap_err();

        assert_eq!(error.code, "invalid_element_count");
    }

    #[test]
    fn one_input_required() {
        let two = vec![
            input(
                "input",
                "BYTES",
                &[1],
                TensorData::Bytes(vec![Bytes::new()]),
            ),
            input(
                "input",
                "BYTES",
                &[1],
                TensorData::Bytes(vec![Bytes::new()]),
            ),
        ];

        assert_eq!(check_input(two, SPEC).unwrap_err().code, "invalid_inputs");
        assert_eq!(
            check_input(Vec::new(), SPEC).unwrap_err().code,
            "invalid_inputs"
        );
    }

    #[test]
    fn unknown_input_and_datatype() {
        let named = input(
            "image",
            "BYTES",
            &[1],
            TensorData::Bytes(vec![Bytes::new()]),
        );
        let int8 = input("input", "INT8", &[1], TensorData::Bytes(vec![Bytes::new()]));

        assert_eq!(
            check_input(vec![named], SPEC).unwrap_err().code,
            "unknown_input"
        );
        assert_eq!(
            check_input(vec![int8], SPEC).unwrap_err().code,
            "invalid_datatype"
        );
    }

    #[test]
    fn fp32_input_splits_into_tensors() {
        let spec = InputSpec {
            resolution: 1,
            max_images: 4,
        };
        let values = vec![0.5; 6];

        let images = check_input(
            vec![input(
                "input",
                "FP32",
                &[2, 3, 1, 1],
                TensorData::Fp32(values),
            )],
            spec,
        )
        .unwrap();

        assert_eq!(images, Images::Tensors(vec![vec![0.5; 3], vec![0.5; 3]]));
    }

    #[test]
    fn outputs_default_to_logits() {
        let outputs = check_outputs(&[]).unwrap();

        assert_eq!(outputs.len(), 1);
        assert_eq!(outputs[0].name, OUTPUT_NAME);
    }

    #[test]
    fn outputs_reject_unknown_and_zero_classification() {
        let unknown = RequestedOutput {
            name: "probabilities".into(),
            classification: None,
            binary_data: false,
        };
        let zero = RequestedOutput {
            name: OUTPUT_NAME.into(),
            classification: Some(0),
            binary_data: false,
        };

        assert_eq!(
            check_outputs(&[unknown]).unwrap_err().code,
            "unknown_output"
        );
        assert_eq!(
            check_outputs(&[zero]).unwrap_err().code,
            "invalid_classification"
        );
    }
}
