//! `sandbox`: serve the emulated API server on a TCP port and write a kubeconfig.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::Parser;

/// Emulated Kubernetes API server.
#[derive(Parser, Debug)]
#[command(name = "sandbox", version, about)]
struct Args {
    /// Address to listen on (port 0 picks a free port).
    #[arg(long, default_value = "127.0.0.1:6443")]
    listen: SocketAddr,
    /// Where to write the kubeconfig.
    #[arg(long)]
    kubeconfig_out: Option<PathBuf>,
    /// Serve plain HTTP instead of HTTPS.
    #[arg(long)]
    insecure_http: bool,
    /// Require this bearer token.
    #[arg(long, env = "SANDBOX_TOKEN")]
    token: Option<String>,
    /// Events kept per resource before compaction.
    #[arg(long, default_value_t = 10_000)]
    history_limit: usize,
    /// Simulated cluster: nodes, scheduler, kubelets, controllers (see docs/e2e.md).
    #[command(flatten)]
    cluster: e2e::cluster::ClusterArgs,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .init();
    let args = Args::parse();
    let config = e2e::Config {
        token: args.token.clone(),
        history_limit: args.history_limit,
        graceful_pod_deletion: true,
        ..Default::default()
    };
    let server = e2e::ApiServer::new(config);
    let running = server.serve_tcp(args.listen, !args.insecure_http).await?;
    let cluster = args.cluster.start(&server).await?;
    if let Some(path) = &args.kubeconfig_out {
        running.write_kubeconfig(path)?;
        eprintln!("kubeconfig written to {}", path.display());
    }
    println!("sandbox API server listening on {}", running.url);
    tokio::signal::ctrl_c().await?;
    eprintln!("shutting down");
    cluster.shutdown().await;
    Ok(())
}
