//! Measures client-side latency of REST classify calls against a running
//! server, to compare settings such as `--shadow-fraction 0` and `1.0`.
//!
//! ```sh
//! cargo run --release -p effnet-serve --example client_latency -- \
//!     http://127.0.0.1:8000 efficientnet-lite0-int8 ../shared/data/imagenet-sample/images 200 2
//! ```
//!
//! Arguments: server URL, model, image directory, request count, concurrent
//! clients. Prints the count, throughput and latency percentiles in ms.

use std::{
    path::PathBuf,
    sync::Mutex,
    time::{Duration, Instant},
};

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [url, model, dir, count, clients] = args.as_slice() else {
        eprintln!("usage: client_latency URL MODEL IMAGE_DIR COUNT CLIENTS");
        std::process::exit(2);
    };
    let count: usize = count.parse().expect("COUNT is a number");
    let clients: usize = clients.parse().expect("CLIENTS is a number");

    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .expect("IMAGE_DIR is readable")
        .map(|entry| entry.expect("directory entry").path())
        .collect();
    files.sort();
    let images: Vec<Vec<u8>> = files
        .iter()
        .take(50)
        .map(|f| std::fs::read(f).expect("image"))
        .collect();

    let endpoint = format!("{url}/v1/models/{model}/classify");
    let latencies = Mutex::new(Vec::with_capacity(count));
    let started = Instant::now();
    std::thread::scope(|scope| {
        for client in 0..clients {
            let (endpoint, images, latencies) = (&endpoint, &images, &latencies);
            scope.spawn(move || {
                let http = reqwest::blocking::Client::new();
                for i in (client..count).step_by(clients) {
                    let body = images[i % images.len()].clone();
                    let start = Instant::now();
                    let response = http.post(endpoint).body(body).send().expect("request sent");
                    assert!(
                        response.status().is_success(),
                        "status {}",
                        response.status()
                    );
                    let _ = response.bytes();
                    latencies.lock().unwrap().push(start.elapsed());
                }
            });
        }
    });
    let elapsed = started.elapsed();

    let mut latencies = latencies.into_inner().unwrap();
    latencies.sort();
    let percentile = |p: f64| -> f64 {
        let index = ((latencies.len() as f64 * p).ceil() as usize).clamp(1, latencies.len()) - 1;
        ms(latencies[index])
    };
    println!(
        "requests {} clients {clients} throughput {:.1}/s p50 {:.1} ms p90 {:.1} ms p99 {:.1} ms max {:.1} ms",
        latencies.len(),
        latencies.len() as f64 / elapsed.as_secs_f64(),
        percentile(0.50),
        percentile(0.90),
        percentile(0.99),
        percentile(1.0),
    );
}

fn ms(duration: Duration) -> f64 {
    duration.as_secs_f64() * 1000.0
}
