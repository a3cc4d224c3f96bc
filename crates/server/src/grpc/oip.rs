//! `inference.GRPCInferenceService`: the Open Inference Protocol over gRPC,
//! with Triton's model configuration, statistics and repository index
//! extensions.

use std::sync::Arc;

use effnet_proto::inference::{
    self as pb, DataType, InferParameter, InferTensorContents, ModelConfig, ModelDynamicBatching,
    ModelInput, ModelOutput, grpc_inference_service_server::GrpcInferenceService,
    infer_parameter::ParameterChoice, model_config::SchedulingChoice,
    model_infer_response::InferOutputTensor,
};
use tonic::{Request, Response, Status};

use super::{request_timeout, status_of, with_deadline};
use crate::{
    error::ServiceError,
    metrics::{ModelStatistics, StatDuration},
    models::{Model, ModelState},
    oip::{self, InferInput, InferRequest, RequestedOutput, TensorData},
    service::{self, InferenceService, Protocol},
};

pub struct Inference {
    service: Arc<InferenceService>,
}

// === impl Inference ===

impl Inference {
    pub fn new(service: Arc<InferenceService>) -> Self {
        Self { service }
    }

    fn resolve(&self, name: &str, version: &str) -> Result<&Arc<Model>, Status> {
        oip::resolve(&self.service, name, version).map_err(|e| status_of(&e))
    }
}

#[tonic::async_trait]
impl GrpcInferenceService for Inference {
    async fn server_live(
        &self,
        _: Request<pb::ServerLiveRequest>,
    ) -> Result<Response<pb::ServerLiveResponse>, Status> {
        Ok(Response::new(pb::ServerLiveResponse { live: true }))
    }

    async fn server_ready(
        &self,
        _: Request<pb::ServerReadyRequest>,
    ) -> Result<Response<pb::ServerReadyResponse>, Status> {
        Ok(Response::new(pb::ServerReadyResponse {
            ready: self.service.is_ready(),
        }))
    }

    async fn model_ready(
        &self,
        request: Request<pb::ModelReadyRequest>,
    ) -> Result<Response<pb::ModelReadyResponse>, Status> {
        let request = request.into_inner();
        let model = self.resolve(&request.name, &request.version)?;
        Ok(Response::new(pb::ModelReadyResponse {
            ready: model.state() == ModelState::Ready,
        }))
    }

    async fn server_metadata(
        &self,
        _: Request<pb::ServerMetadataRequest>,
    ) -> Result<Response<pb::ServerMetadataResponse>, Status> {
        Ok(Response::new(pb::ServerMetadataResponse {
            name: env!("CARGO_PKG_NAME").to_string(),
            version: env!("CARGO_PKG_VERSION").to_string(),
            extensions: oip::EXTENSIONS.iter().map(|e| e.to_string()).collect(),
        }))
    }

    async fn model_metadata(
        &self,
        request: Request<pb::ModelMetadataRequest>,
    ) -> Result<Response<pb::ModelMetadataResponse>, Status> {
        let request = request.into_inner();
        let model = self.resolve(&request.name, &request.version)?;
        let (input, output) = oip::model_tensors(model);
        let tensor = |t: oip::TensorMetadata| pb::model_metadata_response::TensorMetadata {
            name: t.name.to_string(),
            datatype: t.datatype.to_string(),
            shape: t.shape,
        };
        Ok(Response::new(pb::ModelMetadataResponse {
            name: model.name().to_string(),
            versions: vec![oip::MODEL_VERSION.to_string()],
            platform: oip::PLATFORM.to_string(),
            inputs: vec![tensor(input)],
            outputs: vec![tensor(output)],
        }))
    }

    async fn model_infer(
        &self,
        request: Request<pb::ModelInferRequest>,
    ) -> Result<Response<pb::ModelInferResponse>, Status> {
        let timeout = request_timeout(&request);
        let request = request.into_inner();
        let request_id = service::new_request_id();
        let mut tracker = self
            .service
            .track(Protocol::OipGrpc, &request_id, &request.model_name);

        let infer = async {
            let request = convert_request(request, timeout)?;
            oip::infer(&self.service, request).await
        };
        let result = with_deadline(timeout, infer).await;
        if let Ok(response) = &result {
            tracker.set_images(response.images);
        }
        tracker.finish(&result);

        result
            .map(|response| Response::new(convert_response(response)))
            .map_err(|error| status_of(&error))
    }

    async fn model_config(
        &self,
        request: Request<pb::ModelConfigRequest>,
    ) -> Result<Response<pb::ModelConfigResponse>, Status> {
        let request = request.into_inner();
        let model = self.resolve(&request.name, &request.version)?;
        let (input, output) = oip::model_tensors(model);
        Ok(Response::new(pb::ModelConfigResponse {
            config: Some(ModelConfig {
                name: model.name().to_string(),
                platform: oip::PLATFORM.to_string(),
                backend: "onnxruntime".to_string(),
                max_batch_size: model.settings.max_batch_size as i32,
                input: vec![ModelInput {
                    name: input.name.to_string(),
                    data_type: DataType::TypeFp32 as i32,
                    format: pb::model_input::Format::Nchw as i32,
                    dims: input.shape[1..].to_vec(),
                }],
                output: vec![ModelOutput {
                    name: output.name.to_string(),
                    data_type: DataType::TypeFp32 as i32,
                    dims: output.shape[1..].to_vec(),
                    label_filename: String::new(),
                }],
                scheduling_choice: Some(SchedulingChoice::DynamicBatching(ModelDynamicBatching {
                    preferred_batch_size: Vec::new(),
                    max_queue_delay_microseconds: model.settings.max_queue_delay_ms * 1000,
                })),
            }),
        }))
    }

    async fn model_statistics(
        &self,
        request: Request<pb::ModelStatisticsRequest>,
    ) -> Result<Response<pb::ModelStatisticsResponse>, Status> {
        let request = request.into_inner();
        let models: Vec<&Arc<Model>> = if request.name.is_empty() {
            self.service.models().iter().collect()
        } else {
            vec![self.resolve(&request.name, &request.version)?]
        };
        let model_stats = models
            .into_iter()
            .map(|model| convert_statistics(model, self.service.model_statistics(model)))
            .collect();
        Ok(Response::new(pb::ModelStatisticsResponse { model_stats }))
    }

    async fn repository_index(
        &self,
        request: Request<pb::RepositoryIndexRequest>,
    ) -> Result<Response<pb::RepositoryIndexResponse>, Status> {
        let ready_only = request.into_inner().ready;
        let models = self
            .service
            .models()
            .iter()
            .filter_map(|model| {
                let state = model.state();
                if ready_only && state != ModelState::Ready {
                    return None;
                }
                Some(pb::repository_index_response::ModelIndex {
                    name: model.name().to_string(),
                    version: oip::MODEL_VERSION.to_string(),
                    state: state.as_str().to_ascii_uppercase(),
                    reason: state.reason().unwrap_or("").to_string(),
                })
            })
            .collect();
        Ok(Response::new(pb::RepositoryIndexResponse { models }))
    }
}

/// Translates the wire request. Raw contents, when present, must come one
/// per input; otherwise each input carries typed contents.
fn convert_request(
    request: pb::ModelInferRequest,
    timeout: Option<std::time::Duration>,
) -> Result<InferRequest, ServiceError> {
    let raw = request.raw_input_contents;
    if !raw.is_empty() && raw.len() != request.inputs.len() {
        return Err(ServiceError::invalid(
            "invalid_raw_contents",
            format!(
                "raw_input_contents has {} entries for {} inputs",
                raw.len(),
                request.inputs.len()
            ),
        ));
    }
    let mut raw = raw.into_iter();

    let mut inputs = Vec::with_capacity(request.inputs.len());
    for input in request.inputs {
        let data = match (raw.next(), input.contents) {
            (Some(_), Some(_)) => {
                return Err(ServiceError::invalid(
                    "invalid_raw_contents",
                    format!(
                        "input {:?} has both contents and raw_input_contents",
                        input.name
                    ),
                ));
            }
            (Some(bytes), None) => TensorData::Raw(bytes),
            (None, Some(contents)) => typed_contents(&input.datatype, contents),
            (None, None) => {
                return Err(ServiceError::invalid(
                    "invalid_input",
                    format!("input {:?} has no contents", input.name),
                ));
            }
        };
        inputs.push(InferInput {
            name: input.name,
            datatype: input.datatype,
            shape: input.shape,
            data,
        });
    }

    let outputs = request
        .outputs
        .into_iter()
        .map(|output| {
            let classification = match output.parameters.get("classification") {
                None => None,
                Some(InferParameter {
                    parameter_choice: Some(ParameterChoice::Int64Param(k)),
                }) if (1..=1000).contains(k) => Some(*k as usize),
                Some(_) => {
                    return Err(ServiceError::invalid(
                        "invalid_classification",
                        "classification must be an int64 parameter from 1 to 1000",
                    ));
                }
            };
            Ok(RequestedOutput {
                name: output.name,
                classification,
                binary_data: true,
            })
        })
        .collect::<Result<Vec<_>, ServiceError>>()?;

    Ok(InferRequest {
        model: request.model_name,
        version: request.model_version,
        id: request.id,
        inputs,
        outputs,
        timeout,
    })
}

/// Picks the typed field of the declared datatype; the core rejects other
/// datatypes.
fn typed_contents(datatype: &str, contents: InferTensorContents) -> TensorData {
    match datatype {
        "BYTES" => TensorData::Bytes(contents.bytes_contents),
        _ => TensorData::Fp32(contents.fp32_contents),
    }
}

/// Translates one model's statistics into Triton's message for version `1`.
fn convert_statistics(model: &Model, stats: ModelStatistics) -> pb::ModelStatistics {
    let duration = |d: StatDuration| {
        Some(pb::StatisticDuration {
            count: d.count,
            ns: d.ns,
        })
    };
    let batch_stats = stats
        .batch_stats
        .iter()
        .map(|batch| pb::InferBatchStatistics {
            batch_size: batch.batch_size,
            compute_input: duration(batch.compute_input),
            compute_infer: duration(batch.compute_infer),
            compute_output: duration(batch.compute_output),
        })
        .collect();
    pb::ModelStatistics {
        name: model.name().to_string(),
        version: oip::MODEL_VERSION.to_string(),
        last_inference: stats.last_inference,
        inference_count: stats.inference_count,
        execution_count: stats.execution_count,
        inference_stats: Some(pb::InferStatistics {
            success: duration(stats.success),
            fail: duration(stats.fail),
            queue: duration(stats.queue),
            compute_input: duration(stats.compute_input),
            compute_infer: duration(stats.compute_infer),
            compute_output: duration(stats.compute_output),
        }),
        batch_stats,
    }
}

/// Returns every output as raw contents, as Triton does.
fn convert_response(response: oip::InferResponse) -> pb::ModelInferResponse {
    let mut raw_output_contents = Vec::with_capacity(response.outputs.len());
    let outputs = response
        .outputs
        .into_iter()
        .map(|output| {
            raw_output_contents.push(output.data.to_raw().into());
            InferOutputTensor {
                name: output.name,
                datatype: output.datatype.as_str().to_string(),
                shape: output.shape,
                parameters: Default::default(),
                contents: None,
            }
        })
        .collect();
    pb::ModelInferResponse {
        model_name: response.model.name().to_string(),
        model_version: oip::MODEL_VERSION.to_string(),
        id: response.id,
        parameters: Default::default(),
        outputs,
        raw_output_contents,
    }
}
