//! `exo-bench object`: put and get throughput for several object sizes, through eos-proxy and
//! directly on the same kind of backend in-process, with the proxy's peak memory.

use std::{path::PathBuf, sync::Arc, time::Instant};

use bytes::Bytes;
use eos::{
    config::BackendConfig,
    model::{BucketName, PutMeta, WriteCondition},
    presign::LocalPresigner,
};
use exo_sdk::{GetOptions, ObjectClient, PutOptions, RetryPolicy};
use futures::{StreamExt as _, stream};

use crate::{memory_kib, process_cpu, sibling_bin, spawn_any_proxy};

/// Options of the object benchmark.
#[derive(Debug, Clone, clap::Args)]
pub struct ObjectArgs {
    /// Backend: fs or memory (cloud backends: see --config).
    #[arg(long, default_value = "fs")]
    backend: String,
    /// Object sizes in KiB.
    #[arg(long, value_delimiter = ',', default_value = "1,1024,262144")]
    sizes_kib: Vec<u64>,
    /// Bytes moved per size and direction (at least one object).
    #[arg(long, default_value_t = 512 * 1024 * 1024)]
    budget_bytes: u64,
    /// A proxy config file (cloud backends): the proxy runs with it and the direct backend is
    /// opened from its `backend:` section, so both reach the same service the same way.
    #[arg(long)]
    config: Option<PathBuf>,
    /// Also get each object over gRPC through hyper's HTTP/2 client with 16 KiB, 256 KiB and
    /// 1 MiB DATA frames allowed (the SDK's connection allows HTTP/2's default 16 KiB).
    #[arg(long)]
    frame_sizes: bool,
}

fn chunks(data: &Bytes) -> Vec<std::io::Result<Bytes>> {
    let step = exo_sdk::UPLOAD_CHUNK;
    (0..data.len()).step_by(step).map(|at| Ok(data.slice(at..(at + step).min(data.len())))).collect()
}

fn mb_per_s(bytes: u64, seconds: f64) -> f64 {
    bytes as f64 / (1024.0 * 1024.0) / seconds
}

pub async fn bench(args: ObjectArgs) -> anyhow::Result<()> {
    let scratch = tempfile::tempdir()?;
    let bin = sibling_bin("eos-proxy")?;
    let proxy_root = scratch.path().join("proxy");
    let flags = crate::backend_args(&args.backend, args.config.as_deref(), "--root");
    let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
    let mut proxy = spawn_any_proxy(&bin, &flags, &proxy_root, "eos-proxy ready").await?;
    let client = ObjectClient::connect(&proxy.url)?.with_retry(RetryPolicy::none());
    client.create_bucket("bench").await?;

    let presigner = Arc::new(LocalPresigner::new("http://127.0.0.1:0", None));
    let direct_config = match &args.config {
        Some(file) => exo_proxy_core::config::load_yaml::<eos::config::EosConfig>(file)?,
        None => eos::config::EosConfig {
            backend: BackendConfig::named(&args.backend, Some(scratch.path().join("direct")))?,
            ..Default::default()
        },
    };
    let direct = eos::open_backend(
        &direct_config,
        presigner,
        std::time::Duration::from_secs(60),
        exo_proxy_core::metrics::Metrics::shared(),
    )
    .await?;
    let bucket = BucketName::parse("bucket", "bench", "bucket")?;
    direct.create_bucket(eos::ops::CreateBucket { bucket: &bucket }).await?;

    // The floor for gets: what one loopback TCP connection carries, measured now.
    let wire = crate::floors::loopback_bandwidth(args.budget_bytes.max(64 << 20))?;
    println!("## eos: object throughput, backend `{}`\n", direct_config.backend.kind());
    println!(
        "one loopback TCP connection carries {:.0} MB/s now (the floor for a get)\n",
        wire / (1024.0 * 1024.0)
    );
    println!(
        "| size (gRPC, SDK) | objects | put direct MB/s | put via proxy MB/s | put ratio | get direct MB/s | get via proxy MB/s | get ratio | get ÷ loopback | proxy CPU ms per MiB |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|");
    let http = reqwest::Client::new();
    let mut http_rows = Vec::new();
    let mut frame_rows = Vec::new();
    for kib in &args.sizes_kib {
        let size = kib * 1024;
        let count = (args.budget_bytes / size).clamp(1, 2000);
        let data: Bytes = (0..size).map(|i| (i % 251) as u8).collect::<Vec<u8>>().into();
        let total = size * count;

        let cpu_before = process_cpu(proxy.pid)?;
        let t = Instant::now();
        for i in 0..count {
            let options = PutOptions { content_length: Some(size), ..Default::default() };
            client.put_stream("bench", &format!("o{kib}-{i}"), stream::iter(chunks(&data)), options).await?;
        }
        let put_via = t.elapsed().as_secs_f64();
        let t = Instant::now();
        for i in 0..count {
            let (_, body) = client.get("bench", &format!("o{kib}-{i}"), GetOptions::default()).await?;
            let mut body = std::pin::pin!(body);
            let mut n = 0u64;
            while let Some(chunk) = body.next().await {
                n += chunk?.len() as u64;
            }
            anyhow::ensure!(n == size, "download of {n} bytes, expected {size}");
        }
        let get_via = t.elapsed().as_secs_f64();
        let proxy_cpu = process_cpu(proxy.pid)? - cpu_before;

        // The same gRPC gets through hyper's HTTP/2 client with larger DATA frames allowed.
        if args.frame_sizes {
            let addr: std::net::SocketAddr = proxy.url.trim_start_matches("http://").parse()?;
            for frame in [None, Some(256 << 10), Some(1 << 20)] {
                let (send, driver) = crate::floors::hyper_connection(addr, frame).await?;
                let origin = crate::floors::HyperSend::ORIGIN.parse()?;
                let mut grpc = exo_proto::object::v1::object_service_client::ObjectServiceClient::with_origin(
                    send, origin,
                );
                let t = Instant::now();
                for i in 0..count {
                    let request = exo_proto::object::v1::GetRequest {
                        bucket: "bench".into(),
                        key: format!("o{kib}-{i}"),
                        ..Default::default()
                    };
                    let mut messages = grpc.get(request).await?.into_inner();
                    let mut n = 0u64;
                    while let Some(message) = messages.message().await? {
                        if let Some(exo_proto::object::v1::get_response::Part::Chunk(chunk)) = message.part {
                            n += chunk.len() as u64;
                        }
                    }
                    anyhow::ensure!(n == size, "download of {n} bytes, expected {size}");
                }
                let seconds = t.elapsed().as_secs_f64();
                driver.abort();
                frame_rows.push(format!(
                    "| {} | {} KiB | {:.0} | {:.2} |",
                    human(size),
                    frame.unwrap_or(16 << 10) >> 10,
                    mb_per_s(total, seconds),
                    total as f64 / seconds / wire
                ));
            }
        }

        // The same over HTTP/1.1 keep-alive (the JSON API's object routes carry raw bytes).
        let objects = format!("{}/api/v1/buckets/bench/objects", proxy.url);
        let t = Instant::now();
        for i in 0..count {
            let response = http.put(format!("{objects}/h{kib}-{i}")).body(data.clone()).send().await?;
            anyhow::ensure!(response.status().is_success(), "HTTP put: {}", response.status());
        }
        let put_http = t.elapsed().as_secs_f64();
        let t = Instant::now();
        for i in 0..count {
            let mut response = http.get(format!("{objects}/o{kib}-{i}")).send().await?;
            anyhow::ensure!(response.status().is_success(), "HTTP get: {}", response.status());
            let mut n = 0u64;
            while let Some(chunk) = response.chunk().await? {
                n += chunk.len() as u64;
            }
            anyhow::ensure!(n == size, "HTTP download of {n} bytes, expected {size}");
        }
        let get_http = t.elapsed().as_secs_f64();

        let t = Instant::now();
        for i in 0..count {
            let meta = PutMeta {
                content_type: "application/octet-stream".into(),
                metadata: Default::default(),
                condition: WriteCondition::None,
                content_length: Some(size),
                max_bytes: 0,
            };
            let body = Box::pin(stream::iter(
                chunks(&data)
                    .into_iter()
                    .map(|c| c.map_err(|e| exo_proxy_core::ExoError::internal(e.to_string()))),
            ));
            direct.put(eos::ops::Put { bucket: &bucket, key: &format!("o{kib}-{i}"), meta }, body).await?;
        }
        let put_direct = t.elapsed().as_secs_f64();
        let t = Instant::now();
        for i in 0..count {
            let (_, _, body) = direct
                .get(eos::ops::Get {
                    bucket: &bucket,
                    key: &format!("o{kib}-{i}"),
                    range: None,
                    condition: &Default::default(),
                })
                .await?;
            let mut body = body;
            let mut n = 0u64;
            while let Some(chunk) = body.next().await {
                n += chunk?.len() as u64;
            }
            anyhow::ensure!(n == size, "direct read of {n} bytes, expected {size}");
        }
        let get_direct = t.elapsed().as_secs_f64();
        // Free the space before the next size.
        for i in 0..count {
            client.delete("bench", &format!("o{kib}-{i}"), None).await?;
            client.delete("bench", &format!("h{kib}-{i}"), None).await?;
            direct
                .delete(eos::ops::Delete { bucket: &bucket, key: &format!("o{kib}-{i}"), if_match: None })
                .await?;
        }
        let mib_moved = 2.0 * total as f64 / (1024.0 * 1024.0);
        println!(
            "| {} | {count} | {:.0} | {:.0} | {:.2} | {:.0} | {:.0} | {:.2} | {:.2} | {:.2} |",
            human(size),
            mb_per_s(total, put_direct),
            mb_per_s(total, put_via),
            put_direct / put_via,
            mb_per_s(total, get_direct),
            mb_per_s(total, get_via),
            get_direct / get_via,
            total as f64 / get_via / wire,
            proxy_cpu.as_secs_f64() * 1000.0 / mib_moved,
        );
        http_rows.push(format!(
            "| {} | {count} | {:.0} | {:.2} | {:.0} | {:.2} | {:.2} |",
            human(size),
            mb_per_s(total, put_http),
            put_direct / put_http,
            mb_per_s(total, get_http),
            get_direct / get_http,
            total as f64 / get_http / wire,
        ));
    }
    println!(
        "\nThe same objects over HTTP/1.1 keep-alive (`PUT`/`GET /api/v1/buckets/bench/objects/KEY`):\n"
    );
    println!(
        "| size | objects | put via HTTP MB/s | put ratio | get via HTTP MB/s | get ratio | get ÷ loopback |"
    );
    println!("|---|---|---|---|---|---|---|");
    for row in http_rows {
        println!("{row}");
    }
    if !frame_rows.is_empty() {
        println!("\ngRPC gets through hyper's HTTP/2 client, by the DATA frame size it accepts:\n");
        println!("| size | frames up to | get MB/s | get ÷ loopback |");
        println!("|---|---|---|---|");
        for row in frame_rows {
            println!("{row}");
        }
    }
    let (rss, peak) = memory_kib(proxy.pid)?;
    println!(
        "\nproxy RSS at the end {:.1} MiB, peak {:.1} MiB (VmHWM)",
        rss as f64 / 1024.0,
        peak as f64 / 1024.0
    );
    proxy.child.start_kill()?;
    let _ = proxy.child.wait().await;
    Ok(())
}

fn human(bytes: u64) -> String {
    match bytes {
        b if b >= 1024 * 1024 => format!("{} MiB", b / (1024 * 1024)),
        b if b >= 1024 => format!("{} KiB", b / 1024),
        b => format!("{b} B"),
    }
}
