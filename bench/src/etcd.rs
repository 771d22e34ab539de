//! etcd v3 KV through gRPC (tonic, client only): `Put` for SET and `Range` of one key for GET.
//!
//! The messages are written by hand with prost's derive, field numbers as in etcd's
//! `etcdserver/etcdserverpb/rpc.proto` and `mvcc/mvccpb/kv.proto`, so no `protoc` is needed.
//! Only the fields the bench sends or reads are declared; prost skips the others on decode.

use std::time::Duration;

use bytes::Bytes;
use tonic::client::Grpc;
use tonic::codegen::http::uri::PathAndQuery;
use tonic::transport::{Channel, Endpoint};
use tonic_prost::ProstCodec;

use crate::workload::{OpKind, Reply, Request};

const PUT_PATH: &str = "/etcdserverpb.KV/Put";
const RANGE_PATH: &str = "/etcdserverpb.KV/Range";

/// etcdserverpb.PutRequest
#[derive(Clone, PartialEq, prost::Message)]
pub struct PutRequest {
    #[prost(bytes = "bytes", tag = "1")]
    pub key: Bytes,
    #[prost(bytes = "bytes", tag = "2")]
    pub value: Bytes,
    #[prost(int64, tag = "3")]
    pub lease: i64,
    #[prost(bool, tag = "4")]
    pub prev_kv: bool,
}

/// etcdserverpb.ResponseHeader
#[derive(Clone, PartialEq, prost::Message)]
pub struct ResponseHeader {
    #[prost(uint64, tag = "1")]
    pub cluster_id: u64,
    #[prost(uint64, tag = "2")]
    pub member_id: u64,
    #[prost(int64, tag = "3")]
    pub revision: i64,
    #[prost(uint64, tag = "4")]
    pub raft_term: u64,
}

/// etcdserverpb.PutResponse
#[derive(Clone, PartialEq, prost::Message)]
pub struct PutResponse {
    #[prost(message, optional, tag = "1")]
    pub header: Option<ResponseHeader>,
}

/// etcdserverpb.RangeRequest: an empty `range_end` asks for the one key. Linearizable
/// (`serializable` false), as a fair match for kvsd's durable reads.
#[derive(Clone, PartialEq, prost::Message)]
pub struct RangeRequest {
    #[prost(bytes = "bytes", tag = "1")]
    pub key: Bytes,
    #[prost(bytes = "bytes", tag = "2")]
    pub range_end: Bytes,
    #[prost(int64, tag = "3")]
    pub limit: i64,
    #[prost(int64, tag = "4")]
    pub revision: i64,
    #[prost(bool, tag = "7")]
    pub serializable: bool,
}

/// mvccpb.KeyValue
#[derive(Clone, PartialEq, prost::Message)]
pub struct KeyValue {
    #[prost(bytes = "bytes", tag = "1")]
    pub key: Bytes,
    #[prost(int64, tag = "2")]
    pub create_revision: i64,
    #[prost(int64, tag = "3")]
    pub mod_revision: i64,
    #[prost(int64, tag = "4")]
    pub version: i64,
    #[prost(bytes = "bytes", tag = "5")]
    pub value: Bytes,
    #[prost(int64, tag = "6")]
    pub lease: i64,
}

/// etcdserverpb.RangeResponse
#[derive(Clone, PartialEq, prost::Message)]
pub struct RangeResponse {
    #[prost(message, optional, tag = "1")]
    pub header: Option<ResponseHeader>,
    #[prost(message, repeated, tag = "2")]
    pub kvs: Vec<KeyValue>,
    #[prost(bool, tag = "3")]
    pub more: bool,
    #[prost(int64, tag = "4")]
    pub count: i64,
}

/// One HTTP/2 connection to etcd; clones share it (one per request in flight).
#[derive(Clone)]
pub struct EtcdClient {
    grpc: Grpc<Channel>,
}

impl EtcdClient {
    pub async fn connect(addr: &str, timeout: Duration) -> anyhow::Result<EtcdClient> {
        let endpoint = Endpoint::from_shared(format!("http://{addr}"))?
            .tcp_nodelay(true)
            .connect_timeout(timeout);
        let channel = endpoint.connect().await?;
        Ok(EtcdClient {
            grpc: Grpc::new(channel),
        })
    }

    pub async fn call(&mut self, request: &Request) -> Reply {
        if let Err(error) = self.grpc.ready().await {
            return Reply::Error(format!("etcd connection: {error}"));
        }
        match request.op {
            OpKind::Set => {
                let put = PutRequest {
                    key: request.key.clone(),
                    value: request.value.clone(),
                    ..PutRequest::default()
                };
                let path = PathAndQuery::from_static(PUT_PATH);
                let reply = self
                    .grpc
                    .unary::<_, PutResponse, _>(
                        tonic::Request::new(put),
                        path,
                        ProstCodec::default(),
                    )
                    .await;
                match reply {
                    Ok(_) => Reply::Stored,
                    Err(status) => Reply::Error(status_text(&status)),
                }
            }
            OpKind::Get => {
                let range = RangeRequest {
                    key: request.key.clone(),
                    ..RangeRequest::default()
                };
                let path = PathAndQuery::from_static(RANGE_PATH);
                let reply = self
                    .grpc
                    .unary::<_, RangeResponse, _>(
                        tonic::Request::new(range),
                        path,
                        ProstCodec::default(),
                    )
                    .await;
                match reply {
                    Ok(response) => {
                        let response = response.into_inner();
                        match response.kvs.into_iter().find(|kv| kv.key == request.key) {
                            Some(kv) => Reply::Value(kv.value),
                            None => Reply::NotFound,
                        }
                    }
                    Err(status) => Reply::Error(status_text(&status)),
                }
            }
        }
    }
}

fn status_text(status: &tonic::Status) -> String {
    format!("etcd {:?}: {}", status.code(), status.message())
}

#[cfg(test)]
mod tests {
    use super::*;
    use prost::Message;

    #[test]
    fn put_request_bytes_match_protobuf() {
        let put = PutRequest {
            key: Bytes::from_static(b"k"),
            value: Bytes::from_static(b"vv"),
            ..PutRequest::default()
        };
        // field 1 (bytes): 0x0a len 1 "k"; field 2: 0x12 len 2 "vv"; zero fields are omitted.
        assert_eq!(put.encode_to_vec(), b"\x0a\x01k\x12\x02vv");
    }

    #[test]
    fn range_response_skips_unknown_fields() {
        // header {revision: 5}, kvs [{key "k", value "v", version 1}], count 1, and an
        // unknown field 9 that prost must skip.
        let mut wire = Vec::new();
        RangeResponse {
            header: Some(ResponseHeader {
                revision: 5,
                ..ResponseHeader::default()
            }),
            kvs: vec![KeyValue {
                key: Bytes::from_static(b"k"),
                value: Bytes::from_static(b"v"),
                version: 1,
                ..KeyValue::default()
            }],
            more: false,
            count: 1,
        }
        .encode(&mut wire)
        .unwrap();
        wire.extend_from_slice(b"\x48\x01");
        let decoded = RangeResponse::decode(&wire[..]).unwrap();
        assert_eq!(decoded.count, 1);
        assert_eq!(&decoded.kvs[0].value[..], b"v");
    }
}
