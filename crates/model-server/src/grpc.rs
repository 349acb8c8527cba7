//! The gRPC form: `inference.GRPCInferenceService`. Inputs are read from typed `contents` or,
//! when those are empty, the next `raw_input_contents` entry (tritonclient always sends raw;
//! the KServe SDK sends either); outputs always go in `raw_output_contents`, which is all
//! tritonclient reads.

use std::sync::Arc;

use tally_model::Named;
use tally_model::grpc::{self as pb, grpc_inference_service_server::GrpcInferenceService};
use tonic::{Request, Response, Status};

use crate::ModelServer;
use crate::infer::{Call, ServeError};

/// The service over a shared server.
#[derive(Debug, Clone)]
pub struct Service(pub Arc<ModelServer>);

impl From<ServeError> for Status {
    fn from(e: ServeError) -> Self {
        match e {
            ServeError::Invalid(m) => Status::invalid_argument(m),
            ServeError::NotFound(m) => Status::not_found(m),
            ServeError::Unavailable(m) => Status::unavailable(m),
            ServeError::Internal(m) => Status::internal(m),
        }
    }
}

fn version(v: &str) -> Option<&str> {
    Some(v).filter(|v| !v.is_empty())
}

#[tonic::async_trait]
impl GrpcInferenceService for Service {
    async fn server_live(&self, _: Request<pb::ServerLiveRequest>) -> Result<Response<pb::ServerLiveResponse>, Status> {
        Ok(Response::new(pb::ServerLiveResponse { live: true }))
    }

    async fn server_ready(
        &self,
        _: Request<pb::ServerReadyRequest>,
    ) -> Result<Response<pb::ServerReadyResponse>, Status> {
        Ok(Response::new(pb::ServerReadyResponse { ready: !self.0.faults.get().down }))
    }

    async fn model_ready(
        &self,
        request: Request<pb::ModelReadyRequest>,
    ) -> Result<Response<pb::ModelReadyResponse>, Status> {
        let r = request.into_inner();
        let ready = self.0.model_ready(&r.name, version(&r.version)).unwrap_or(false);
        Ok(Response::new(pb::ModelReadyResponse { ready }))
    }

    async fn server_metadata(
        &self,
        _: Request<pb::ServerMetadataRequest>,
    ) -> Result<Response<pb::ServerMetadataResponse>, Status> {
        let m = crate::server_metadata();
        Ok(Response::new(pb::ServerMetadataResponse {
            name: m["name"].as_str().unwrap_or_default().to_owned(),
            version: m["version"].as_str().unwrap_or_default().to_owned(),
            extensions: crate::EXTENSIONS.iter().map(|e| (*e).to_owned()).collect(),
        }))
    }

    async fn model_metadata(
        &self,
        request: Request<pb::ModelMetadataRequest>,
    ) -> Result<Response<pb::ModelMetadataResponse>, Status> {
        let r = request.into_inner();
        let m = self.0.metadata(&r.name, version(&r.version))?;
        let tensors = |t: Vec<crate::infer::TensorMeta>| {
            t.into_iter()
                .map(|t| pb::model_metadata_response::TensorMetadata {
                    name: t.name,
                    datatype: t.datatype,
                    shape: t.shape,
                })
                .collect()
        };
        Ok(Response::new(pb::ModelMetadataResponse {
            name: m.name,
            versions: m.versions,
            platform: m.platform,
            inputs: tensors(m.inputs),
            outputs: tensors(m.outputs),
        }))
    }

    async fn model_infer(
        &self,
        request: Request<pb::ModelInferRequest>,
    ) -> Result<Response<pb::ModelInferResponse>, Status> {
        let r = request.into_inner();
        let mut raw = r.raw_input_contents.into_iter();
        let mut inputs = Vec::with_capacity(r.inputs.len());
        for t in r.inputs {
            let dt = pb::datatype(&t.datatype).map_err(|e| Status::invalid_argument(e.0))?;
            let typed = t.contents.as_ref().filter(|c| pb::has_contents(c));
            let values = match typed {
                Some(c) => pb::from_contents(dt, c, &t.shape),
                None => match raw.next() {
                    Some(bytes) => tally_model::Values::from_raw(dt, &bytes, &t.shape),
                    None => {
                        return Err(Status::invalid_argument(format!(
                            "input {} has no contents and no raw_input_contents entry",
                            t.name
                        )));
                    }
                },
            }
            .map_err(|e| Status::invalid_argument(format!("input {}: {e}", t.name)))?;
            inputs.push(Named { name: t.name, shape: t.shape, values });
        }
        if raw.next().is_some() {
            return Err(Status::invalid_argument("more raw_input_contents entries than raw inputs"));
        }
        let outputs = (!r.outputs.is_empty()).then(|| r.outputs.into_iter().map(|o| o.name).collect());
        let call = Call { model: r.model_name, version: version(&r.model_version).map(str::to_owned), inputs, outputs };
        let answer = self.0.infer(call, "grpc").await?;
        let raw_output_contents = answer.outputs.iter().map(|o| o.values.to_raw()).collect();
        let outputs = answer
            .outputs
            .into_iter()
            .map(|o| pb::model_infer_response::InferOutputTensor {
                name: o.name,
                datatype: pb::datatype_name(o.values.datatype()),
                shape: o.shape,
                parameters: Default::default(),
                contents: None,
            })
            .collect();
        Ok(Response::new(pb::ModelInferResponse {
            model_name: answer.model,
            model_version: answer.version,
            id: r.id,
            parameters: Default::default(),
            outputs,
            raw_output_contents,
        }))
    }
}
