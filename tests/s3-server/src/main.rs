//! `meshtrace-s3-server --host H --port P --access-key K --secret-key S ROOT`:
//! s3s-fs's S3 implementation over a directory, on one TCP port, with
//! TCP_NODELAY on each accepted connection (see Cargo.toml for why).

use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto::Builder;
use s3s::auth::SimpleAuth;
use s3s::service::S3ServiceBuilder;
use std::path::PathBuf;

struct Args {
    host: String,
    port: u16,
    keys: Option<(String, String)>,
    root: PathBuf,
}

fn parse() -> Result<Args, String> {
    let (mut host, mut port, mut ak, mut sk, mut root) =
        ("127.0.0.1".to_string(), 8014u16, None, None, None);
    let mut it = std::env::args().skip(1);
    while let Some(a) = it.next() {
        let mut value = || it.next().ok_or(format!("{a} needs a value"));
        match a.as_str() {
            "--host" => host = value()?,
            "--port" => port = value()?.parse().map_err(|e| format!("--port: {e}"))?,
            "--access-key" => ak = Some(value()?),
            "--secret-key" => sk = Some(value()?),
            _ if a.starts_with("--") => return Err(format!("unknown option {a}")),
            _ => root = Some(PathBuf::from(a)),
        }
    }
    let keys = match (ak, sk) {
        (Some(a), Some(s)) => Some((a, s)),
        (None, None) => None,
        _ => return Err("--access-key and --secret-key go together".into()),
    };
    let root = root.ok_or("the root directory is missing")?;
    Ok(Args {
        host,
        port,
        keys,
        root,
    })
}

#[tokio::main]
async fn main() {
    let args = match parse() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("meshtrace-s3-server: {e}\nusage: meshtrace-s3-server [--host H] [--port P] [--access-key K --secret-key S] ROOT");
            std::process::exit(2);
        }
    };
    if let Err(e) = run(args).await {
        eprintln!("meshtrace-s3-server: {e}");
        std::process::exit(1);
    }
}

async fn run(args: Args) -> Result<(), Box<dyn std::error::Error>> {
    let fs = s3s_fs::FileSystem::new(&args.root)
        .map_err(|e| format!("{}: {e:?}", args.root.display()))?;
    let mut b = S3ServiceBuilder::new(fs);
    if let Some((ak, sk)) = args.keys {
        b.set_auth(SimpleAuth::from_single(ak, sk));
    }
    let service = b.build();
    let listener = tokio::net::TcpListener::bind((args.host.as_str(), args.port)).await?;
    println!("server is running at http://{}", listener.local_addr()?);
    let http = Builder::new(TokioExecutor::new());
    loop {
        let socket = match listener.accept().await {
            Ok((s, _)) => s,
            Err(e) => {
                eprintln!("accept: {e}");
                continue;
            }
        };
        let _ = socket.set_nodelay(true);
        let conn = http
            .serve_connection(TokioIo::new(socket), service.clone())
            .into_owned();
        tokio::spawn(async move {
            let _ = conn.await;
        });
    }
}
