//! Which role may call which RPC, checked once per call (each call is a long-lived stream,
//! so never per message) from the certificate the caller proved in its handshake.

use std::task::{Context, Poll};

use futures::future::{Either, Ready, ready};
use rustls::pki_types::CertificateDer;
use tonic::Status;
use tonic::transport::server::{TcpConnectInfo, TlsConnectInfo};
use xmppd_grpc::Role;

use crate::identity::{Identity, role_name};

/// Every RPC of `proto/xmppd/v1/cluster.proto` and the one role allowed to call it. A call
/// not in this table is refused, whoever makes it.
///
/// | RPC                         | caller             | why                                          |
/// |-----------------------------|--------------------|----------------------------------------------|
/// | `xmppd.v1.Router/Attach`    | connection-manager | only an edge forwards client stanzas         |
/// | `xmppd.v1.Session/Process`  | router             | only the switch hands stanzas to an owner    |
/// | `xmppd.v1.Session/Logins`   | connection-manager | only an edge authenticates and binds clients |
pub const CALLERS: [(&str, Role); 3] = [
    ("/xmppd.v1.Router/Attach", Role::ConnectionManager),
    ("/xmppd.v1.Session/Process", Role::Router),
    ("/xmppd.v1.Session/Logins", Role::ConnectionManager),
];

/// The role allowed to call the RPC at `path`, if it is one.
pub fn allowed_caller(path: &str) -> Option<Role> {
    CALLERS
        .iter()
        .find(|(rpc, _)| *rpc == path)
        .map(|(_, role)| *role)
}

/// Why the caller of the RPC at `path`, presenting `certificates`, may not call it.
pub fn refusal(path: &str, certificates: Option<&[CertificateDer<'static>]>) -> Option<Status> {
    let Some(allowed) = allowed_caller(path) else {
        return Some(Status::permission_denied(format!(
            "{path} is not an RPC of the cluster"
        )));
    };
    let Some(leaf) = certificates.and_then(|chain| chain.first()) else {
        return Some(Status::unauthenticated("no client certificate"));
    };
    match Identity::of(leaf) {
        Ok(identity) if identity.role == allowed => None,
        Ok(identity) => Some(Status::permission_denied(format!(
            "a {} may not call {path}, only a {}",
            role_name(identity.role),
            role_name(allowed)
        ))),
        Err(error) => Some(Status::unauthenticated(error.to_string())),
    }
}

/// The tower layer of the gRPC server that enforces [`CALLERS`].
#[derive(Clone, Copy, Debug, Default)]
pub struct RequireCallerRoleLayer;

impl<S> tower::Layer<S> for RequireCallerRoleLayer {
    type Service = RequireCallerRole<S>;

    fn layer(&self, inner: S) -> Self::Service {
        RequireCallerRole { inner }
    }
}

/// The gRPC server's routes behind the check of [`CALLERS`].
#[derive(Clone, Debug)]
pub struct RequireCallerRole<S> {
    inner: S,
}

impl<S, RequestBody, ResponseBody> tower::Service<http::Request<RequestBody>>
    for RequireCallerRole<S>
where
    S: tower::Service<http::Request<RequestBody>, Response = http::Response<ResponseBody>>,
    ResponseBody: Default,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = Either<Ready<Result<S::Response, S::Error>>, S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<RequestBody>) -> Self::Future {
        let certificates = request
            .extensions()
            .get::<TlsConnectInfo<TcpConnectInfo>>()
            .and_then(TlsConnectInfo::peer_certs);
        match refusal(
            request.uri().path(),
            certificates.as_deref().map(Vec::as_slice),
        ) {
            None => Either::Right(self.inner.call(request)),
            Some(status) => {
                tracing::warn!(rpc = request.uri().path(), %status, "cluster call refused");
                Either::Left(ready(Ok(status.into_http())))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A new RPC in the proto without a row here would be refused to everyone: this names it.
    #[test]
    fn every_rpc_of_the_proto_has_a_caller() {
        let proto = include_str!("../../../proto/xmppd/v1/cluster.proto");
        let mut service = "";
        let mut rpcs = Vec::new();
        for line in proto.lines().map(str::trim) {
            if let Some(rest) = line.strip_prefix("service ") {
                service = rest.trim_end_matches('{').trim();
            } else if let Some(rest) = line.strip_prefix("rpc ") {
                let method = rest.split('(').next().unwrap().trim();
                rpcs.push(format!("/xmppd.v1.{service}/{method}"));
            }
        }
        let mut table: Vec<String> = CALLERS.iter().map(|(rpc, _)| rpc.to_string()).collect();
        rpcs.sort();
        table.sort();
        assert_eq!(rpcs, table);
    }

    #[test]
    fn an_unknown_path_is_refused_to_everyone() {
        assert_eq!(
            refusal("/xmppd.v1.Router/Other", None).unwrap().code(),
            tonic::Code::PermissionDenied
        );
    }

    #[test]
    fn a_call_without_a_certificate_is_unauthenticated() {
        assert_eq!(
            refusal("/xmppd.v1.Router/Attach", None).unwrap().code(),
            tonic::Code::Unauthenticated
        );
    }
}
