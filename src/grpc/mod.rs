//! The gRPC encoding of the API: `ipclass.v1.IpClassifier`.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::Arc;
use std::time::UNIX_EPOCH;

use tonic::{Request, Response, Status};

use crate::classify::{classify_address, classify_text, Classification};
use crate::error::RequestError;
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

fn to_proto(ip: String, found: Classification<'_>) -> proto::Classification {
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

/// Classifies `bytes` as concatenated `WIDTH`-byte addresses, one verdict
/// byte per address.
fn classify_packed<const WIDTH: usize>(
    snapshot: &Snapshot,
    bytes: &[u8],
    to_address: fn([u8; WIDTH]) -> IpAddr,
) -> Vec<u8> {
    bytes
        .chunks_exact(WIDTH)
        .map(|chunk| {
            let raw: [u8; WIDTH] = chunk.try_into().expect("chunks_exact yields WIDTH bytes");
            let verdict = classify_address(&snapshot.table, to_address(raw)).verdict;
            proto_verdict(verdict) as u8
        })
        .collect()
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
        last_reload_error: String::new(),
        build_seconds: snapshot.build_time.as_secs_f64(),
    }
}

#[tonic::async_trait]
impl IpClassifier for ClassifierService {
    async fn is_internal(
        &self,
        request: Request<IsInternalRequest>,
    ) -> Result<Response<IsInternalResponse>, Status> {
        let ips = request.into_inner().ips;
        self.state.check_batch(ips.len())?;

        let snapshot = self.state.snapshot();
        let table = &snapshot.table;
        let results = ips
            .into_iter()
            .map(|ip| {
                let found = classify_text(table, &ip);
                to_proto(ip, found)
            })
            .collect();
        Ok(Response::new(IsInternalResponse {
            results,
            generation: table.generation(),
        }))
    }

    async fn is_internal_packed(
        &self,
        request: Request<IsInternalPackedRequest>,
    ) -> Result<Response<IsInternalPackedResponse>, Status> {
        let request = request.into_inner();
        check_packed_length("ipv4", request.ipv4.len(), 4)?;
        check_packed_length("ipv6", request.ipv6.len(), 16)?;
        self.state
            .check_batch(request.ipv4.len() / 4 + request.ipv6.len() / 16)?;

        let snapshot = self.state.snapshot();
        let ipv4_verdicts = classify_packed::<4>(&snapshot, &request.ipv4, |raw| {
            IpAddr::V4(Ipv4Addr::from(raw))
        });
        let ipv6_verdicts = classify_packed::<16>(&snapshot, &request.ipv6, |raw| {
            IpAddr::V6(Ipv6Addr::from(raw))
        });
        Ok(Response::new(IsInternalPackedResponse {
            ipv4_verdicts: ipv4_verdicts.into(),
            ipv6_verdicts: ipv6_verdicts.into(),
            generation: snapshot.table.generation(),
        }))
    }

    async fn get_table_info(
        &self,
        _request: Request<GetTableInfoRequest>,
    ) -> Result<Response<TableInfo>, Status> {
        let snapshot = self.state.snapshot();
        Ok(Response::new(table_info(&self.state, &snapshot)))
    }
}
