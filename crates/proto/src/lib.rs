//! Generated gRPC code of effnet-serve: our own classification service
//! (`effnet.v1`) and the Open Inference Protocol service with Triton's
//! extensions (`inference`), servers and clients, with the encoded file
//! descriptor sets for server reflection.

/// `effnet.v1.Classifier`: classification of encoded images.
pub mod effnet {
    pub mod v1 {
        tonic::include_proto!("effnet.v1");
    }
}

/// `inference.GRPCInferenceService`: the Open Inference Protocol (KServe v2)
/// with the Triton extensions that Triton's clients call.
pub mod inference {
    tonic::include_proto!("inference");
}

/// Encoded `FileDescriptorSet` of `effnet.v1`, for server reflection.
pub const EFFNET_DESCRIPTOR_SET: &[u8] = tonic::include_file_descriptor_set!("effnet_descriptor");

/// Encoded `FileDescriptorSet` of `inference`, for server reflection.
pub const INFERENCE_DESCRIPTOR_SET: &[u8] =
    tonic::include_file_descriptor_set!("inference_descriptor");
