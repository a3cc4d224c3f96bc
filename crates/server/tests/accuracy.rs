//! Accuracy of the served models on the 500 labelled sample photos, through
//! the real HTTP API: FP32 top-1, INT8 agreement with FP32, and agreement
//! with the Python evaluation pipeline on the same model files.

mod common;

use std::{collections::BTreeMap, sync::Arc};

use common::TestServer;

/// Top-1 class of every sample image, classified by `model` over REST with
/// a few requests in flight at a time so batching is exercised.
fn top1_by_file(server: &TestServer, model: &str) -> BTreeMap<String, usize> {
    let files: Arc<Vec<(String, usize)>> = Arc::new(common::sample_labels());
    let url = server.url(&format!("/v1/models/{model}/classify?top_k=1"));
    let workers = 4;

    let handles: Vec<_> = (0..workers)
        .map(|worker| {
            let files = files.clone();
            let url = url.clone();
            std::thread::spawn(move || {
                let client = reqwest::blocking::Client::new();
                let mut out = Vec::new();
                for (file, _) in files.iter().skip(worker).step_by(workers) {
                    let response = client
                        .post(&url)
                        .header("content-type", "image/jpeg")
                        .body(common::sample_image(file))
                        .send()
                        .unwrap();
                    assert_eq!(
                        response.status(),
                        200,
                        "{file}: {}",
                        response.text().unwrap()
                    );
                    let body: serde_json::Value = response.json().unwrap();
                    let top1 = body["results"][0]["classes"][0]["index"].as_u64().unwrap();
                    out.push((file.clone(), top1 as usize));
                }
                out
            })
        })
        .collect();
    handles
        .into_iter()
        .flat_map(|h| h.join().unwrap())
        .collect()
}

fn top1_accuracy(predictions: &BTreeMap<String, usize>) -> f64 {
    let labels = common::sample_labels();
    let hits = labels
        .iter()
        .filter(|(file, index)| predictions[file] == *index)
        .count();
    hits as f64 / labels.len() as f64
}

fn agreement(a: &BTreeMap<String, usize>, b: &BTreeMap<String, usize>) -> f64 {
    let same = a.iter().filter(|(file, index)| b[*file] == **index).count();
    same as f64 / a.len() as f64
}

/// Top-1 of the Python evaluation pipeline, stored by the build.
fn python_top1(model: &str) -> BTreeMap<String, usize> {
    let path = common::model_repository()
        .join(model)
        .join("predictions.json");
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("{}: {e}; rebuild the models", path.display()));
    let value: serde_json::Value = serde_json::from_str(&text).unwrap();
    value["predictions"]
        .as_object()
        .unwrap()
        .iter()
        .map(|(file, top5)| (file.clone(), top5[0].as_u64().unwrap() as usize))
        .collect()
}

#[test]
fn served_models_match_references() {
    let server = TestServer::start(&[]);
    let minimum_fp32_top1 = [("lite0", 0.87), ("lite1", 0.86), ("lite2", 0.86)];

    for (variant, minimum) in minimum_fp32_top1 {
        let fp32_name = format!("efficientnet-{variant}-fp32");
        let int8_name = format!("efficientnet-{variant}-int8");
        let fp32 = top1_by_file(&server, &fp32_name);
        let int8 = top1_by_file(&server, &int8_name);

        let fp32_top1 = top1_accuracy(&fp32);
        let int8_top1 = top1_accuracy(&int8);
        let int8_agreement = agreement(&int8, &fp32);
        let python_fp32 = agreement(&fp32, &python_top1(&fp32_name));
        let python_int8 = agreement(&int8, &python_top1(&int8_name));
        println!(
            "{variant}: fp32 top-1 {fp32_top1:.3}, int8 top-1 {int8_top1:.3}, \
             int8/fp32 agreement {int8_agreement:.3}, server/python agreement \
             fp32 {python_fp32:.3} int8 {python_int8:.3}"
        );

        assert!(
            fp32_top1 >= minimum,
            "{variant} fp32 top-1 {fp32_top1} < {minimum}"
        );
        assert!(
            int8_agreement >= 0.97,
            "{variant} int8/fp32 agreement {int8_agreement} < 0.97"
        );
        assert!(
            python_fp32 >= 0.99,
            "{variant} fp32 server/python agreement {python_fp32} < 0.99"
        );
        assert!(
            python_int8 >= 0.99,
            "{variant} int8 server/python agreement {python_int8} < 0.99"
        );
    }
}
