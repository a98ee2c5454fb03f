//! A one-method unary gRPC server that decodes the request itself.
//!
//! tonic's generated servers decode with `ProstCodec`, which answers a
//! malformed message with `INTERNAL`; the OTLP spec (and any client's retry
//! logic) wants `INVALID_ARGUMENT` with a message saying what is wrong. Here
//! the codec hands the request bytes over undecoded and the handler decodes
//! them, so a bad payload gets the right code. The same server carries Jaeger's
//! `SamplingManager`, whose messages are hand-written prost types.

use bytes::{Buf, Bytes};
use std::marker::PhantomData;
use std::sync::Arc;
use tonic::codec::{
    Codec, CompressionEncoding, DecodeBuf, Decoder, EnabledCompressionEncodings, EncodeBuf, Encoder,
};
use tonic::codegen::{http, BoxFuture, Context, Poll, Service, StdError};
use tonic::{Request, Response, Status};

/// One unary method.
pub trait UnaryHandler: Send + Sync + 'static {
    /// Full service name, e.g. `jaeger.api_v2.SamplingManager`.
    const SERVICE: &'static str;
    /// Method path, e.g. `/jaeger.api_v2.SamplingManager/GetSamplingStrategy`.
    const PATH: &'static str;
    type Response: prost::Message + Send + 'static;
    /// Handles the undecoded request message.
    fn call(self: Arc<Self>, message: Bytes) -> BoxFuture<Self::Response, Status>;
}

/// Decodes the request as raw bytes, encodes the response with prost.
struct BytesCodec<R>(PhantomData<R>);

struct BytesDecoder;
pub struct ProstEncoder<R>(PhantomData<R>);

impl Decoder for BytesDecoder {
    type Item = Bytes;
    type Error = Status;
    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<Bytes>, Status> {
        Ok(Some(src.copy_to_bytes(src.remaining())))
    }
}

impl<R: prost::Message> Encoder for ProstEncoder<R> {
    type Item = R;
    type Error = Status;
    fn encode(&mut self, item: R, dst: &mut EncodeBuf<'_>) -> Result<(), Status> {
        item.encode(dst)
            .map_err(|e| Status::internal(format!("encoding the message: {e}")))
    }
}

impl<R: prost::Message + Send + 'static> Codec for BytesCodec<R> {
    type Encode = R;
    type Decode = Bytes;
    type Encoder = ProstEncoder<R>;
    type Decoder = BytesDecoder;
    fn encoder(&mut self) -> ProstEncoder<R> {
        ProstEncoder(PhantomData)
    }
    fn decoder(&mut self) -> BytesDecoder {
        BytesDecoder
    }
}

/// The tower service tonic's router takes: one method, gzip both ways.
pub struct UnaryServer<H> {
    handler: Arc<H>,
    max_message_bytes: usize,
}

impl<H> UnaryServer<H> {
    pub fn new(handler: H, max_message_bytes: usize) -> Self {
        UnaryServer {
            handler: Arc::new(handler),
            max_message_bytes,
        }
    }
}

impl<H> Clone for UnaryServer<H> {
    fn clone(&self) -> Self {
        UnaryServer {
            handler: Arc::clone(&self.handler),
            max_message_bytes: self.max_message_bytes,
        }
    }
}

impl<H: UnaryHandler> tonic::server::NamedService for UnaryServer<H> {
    const NAME: &'static str = H::SERVICE;
}

struct Method<H>(Arc<H>);

impl<H: UnaryHandler> tonic::server::UnaryService<Bytes> for Method<H> {
    type Response = H::Response;
    type Future = BoxFuture<Response<H::Response>, Status>;
    fn call(&mut self, request: Request<Bytes>) -> Self::Future {
        let handler = Arc::clone(&self.0);
        Box::pin(async move { handler.call(request.into_inner()).await.map(Response::new) })
    }
}

impl<H, B> Service<http::Request<B>> for UnaryServer<H>
where
    H: UnaryHandler,
    B: http_body::Body + Send + 'static,
    B::Error: Into<StdError> + Send + 'static,
{
    type Response = http::Response<tonic::body::Body>;
    type Error = std::convert::Infallible;
    type Future = BoxFuture<Self::Response, Self::Error>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: http::Request<B>) -> Self::Future {
        if req.uri().path() != H::PATH {
            let status = Status::unimplemented(format!(
                "unknown method {}; this port serves {}",
                req.uri().path(),
                H::PATH
            ));
            return Box::pin(async move { Ok(status.into_http()) });
        }
        let method = Method(Arc::clone(&self.handler));
        let max = self.max_message_bytes;
        Box::pin(async move {
            let mut gzip = EnabledCompressionEncodings::default();
            gzip.enable(CompressionEncoding::Gzip);
            let mut grpc = tonic::server::Grpc::new(BytesCodec::<H::Response>(PhantomData))
                .apply_compression_config(gzip, gzip)
                .apply_max_message_size_config(Some(max), None);
            Ok(grpc.unary(method, req).await)
        })
    }
}

/// Client side: encodes `Req` and decodes `Resp` with prost.
pub struct ProstClientCodec<Req, Resp>(PhantomData<(Req, Resp)>);

impl<Req, Resp> Default for ProstClientCodec<Req, Resp> {
    fn default() -> Self {
        ProstClientCodec(PhantomData)
    }
}

pub struct ProstDecoder<R>(PhantomData<R>);

impl<R: prost::Message + Default> Decoder for ProstDecoder<R> {
    type Item = R;
    type Error = Status;
    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<R>, Status> {
        R::decode(src.copy_to_bytes(src.remaining()))
            .map(Some)
            .map_err(|e| Status::internal(format!("malformed response: {e}")))
    }
}

impl<Req, Resp> Codec for ProstClientCodec<Req, Resp>
where
    Req: prost::Message + Send + 'static,
    Resp: prost::Message + Default + Send + 'static,
{
    type Encode = Req;
    type Decode = Resp;
    type Encoder = ProstEncoder<Req>;
    type Decoder = ProstDecoder<Resp>;
    fn encoder(&mut self) -> ProstEncoder<Req> {
        ProstEncoder(PhantomData)
    }
    fn decoder(&mut self) -> ProstDecoder<Resp> {
        ProstDecoder(PhantomData)
    }
}
