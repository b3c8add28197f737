//! The gRPC encoding of the API: `ipclass.v1.IpClassifier`.
//!
//! [`batch`] contains the per-batch work shared with the benchmarks, and
//! [`text`] serves `IsInternal` with a codec that avoids per-address messages.

pub mod batch;
pub mod text;

use std::sync::Arc;
use std::time::UNIX_EPOCH;

use tonic::{Request, Response, Status};

use crate::classify::{classify_text, Classification};
use crate::error::RequestError;
use crate::metrics::{Api, BatchTally};
use crate::proto::{
    self, ip_classifier_server::IpClassifier, GetTableInfoRequest, IsInternalPackedRequest,
    IsInternalPackedResponse, IsInternalRequest, IsInternalResponse, TableInfo,
};
use crate::state::{AppState, Snapshot};
use crate::table::Verdict;

pub use crate::proto::ip_classifier_server::IpClassifierServer;

/// Implements `ipclass.v1.IpClassifier` over the shared state.
#[derive(Debug, Clone)]
pub struct ClassifierService {
    state: Arc<AppState>,
}

impl ClassifierService {
    pub fn new(state: Arc<AppState>) -> ClassifierService {
        ClassifierService { state }
    }
}

pub fn proto_verdict(verdict: Verdict) -> proto::Verdict {
    match verdict {
        Verdict::Internal => proto::Verdict::Internal,
        Verdict::External => proto::Verdict::External,
        Verdict::Unknown => proto::Verdict::Unknown,
        Verdict::Invalid => proto::Verdict::Invalid,
    }
}

pub(crate) fn to_proto(ip: String, found: Classification<'_>) -> proto::Classification {
    proto::Classification {
        ip,
        verdict: proto_verdict(found.verdict).into(),
        internal: found.is_internal(),
        set: found.set.map(|set| set.name.clone()).unwrap_or_default(),
        network: found
            .prefix
            .map(|entry| entry.network.to_string())
            .unwrap_or_default(),
        error: found
            .error
            .map(|error| error.to_string())
            .unwrap_or_default(),
    }
}

fn check_packed_length(field: &'static str, len: usize, width: usize) -> Result<(), RequestError> {
    if len % width != 0 {
        return Err(RequestError::PackedLength { field, len, width });
    }
    Ok(())
}

pub fn table_info(state: &AppState, snapshot: &Snapshot) -> TableInfo {
    let table = &snapshot.table;
    let counts = table.prefix_counts();
    let mut sets: Vec<proto::SetInfo> = table
        .sets()
        .iter()
        .zip(counts)
        .map(|(set, (ipv4, ipv6))| proto::SetInfo {
            name: set.name.clone(),
            internal: set.internal,
            ipv4_prefixes: ipv4,
            ipv6_prefixes: ipv6,
        })
        .collect();
    sets.sort_by(|a, b| a.name.cmp(&b.name));
    TableInfo {
        generation: table.generation(),
        loaded_at_unix_seconds: snapshot
            .loaded_at
            .duration_since(UNIX_EPOCH)
            .map(|elapsed| elapsed.as_secs_f64())
            .unwrap_or_default(),
        config_path: state.config_path.display().to_string(),
        content_hash: snapshot.content_hash.clone(),
        sets,
        last_reload_error: state.reload_status().last_error.unwrap_or_default(),
        build_seconds: snapshot.build_time.as_secs_f64(),
    }
}

#[tonic::async_trait]
impl IpClassifier for ClassifierService {
    async fn is_internal(
        &self,
        request: Request<IsInternalRequest>,
    ) -> Result<Response<IsInternalResponse>, Status> {
        self.classify_text_batch(request.into_inner().ips)
    }

    async fn is_internal_packed(
        &self,
        request: Request<IsInternalPackedRequest>,
    ) -> Result<Response<IsInternalPackedResponse>, Status> {
        self.classify_packed_batch(request.into_inner())
    }

    async fn get_table_info(
        &self,
        _request: Request<GetTableInfoRequest>,
    ) -> Result<Response<TableInfo>, Status> {
        let snapshot = self.state.snapshot();
        Ok(Response::new(table_info(&self.state, &snapshot)))
    }
}

impl ClassifierService {
    fn classify_text_batch(
        &self,
        ips: Vec<String>,
    ) -> Result<Response<IsInternalResponse>, Status> {
        let snapshot = self.state.snapshot();
        let table = &snapshot.table;
        let span = request_span(Api::GrpcIsInternal, ips.len(), table.generation());
        let _entered = span.enter();
        self.state
            .check_batch(ips.len())
            .inspect_err(log_rejected)?;

        let mut tally = BatchTally::new(table);
        let results = ips
            .into_iter()
            .map(|ip| {
                let found = classify_text(table, &ip);
                tally.add(&found);
                to_proto(ip, found)
            })
            .collect();
        tally.record(Api::GrpcIsInternal, &snapshot.set_counters);
        Ok(Response::new(IsInternalResponse {
            results,
            generation: table.generation(),
        }))
    }

    fn classify_packed_batch(
        &self,
        request: IsInternalPackedRequest,
    ) -> Result<Response<IsInternalPackedResponse>, Status> {
        let snapshot = self.state.snapshot();
        let size = request.ipv4.len() / 4 + request.ipv6.len() / 16;
        let span = request_span(Api::GrpcIsInternalPacked, size, snapshot.table.generation());
        let _entered = span.enter();
        check_packed_length("ipv4", request.ipv4.len(), 4).inspect_err(log_rejected)?;
        check_packed_length("ipv6", request.ipv6.len(), 16).inspect_err(log_rejected)?;
        self.state.check_batch(size).inspect_err(log_rejected)?;

        let mut tally = BatchTally::new(&snapshot.table);
        let ipv4_verdicts = batch::classify_packed_ipv4(&snapshot.table, &request.ipv4, &mut tally);
        let ipv6_verdicts = batch::classify_packed_ipv6(&snapshot.table, &request.ipv6, &mut tally);
        tally.record(Api::GrpcIsInternalPacked, &snapshot.set_counters);
        Ok(Response::new(IsInternalPackedResponse {
            ipv4_verdicts: ipv4_verdicts.into(),
            ipv6_verdicts: ipv6_verdicts.into(),
            generation: snapshot.table.generation(),
        }))
    }
}

/// Creates the debug span of one request with its API, batch size and
/// table generation.
pub fn request_span(api: Api, batch_size: usize, generation: u64) -> tracing::Span {
    tracing::debug_span!("request", api = api.as_str(), batch_size, generation)
}

pub fn log_rejected(error: &RequestError) {
    tracing::debug!(%error, "request rejected");
}
