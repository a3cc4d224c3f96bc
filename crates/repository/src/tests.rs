use std::fs;

use super::*;

fn manifest_json(name: &str, state: &str, file: Option<&str>) -> String {
    serde_json::json!({
        "name": name,
        "variant": "lite0",
        "precision": "fp32",
        "state": state,
        "unavailable_reason": if state == "unavailable" { Some("no pretrained weights supplied") } else { None },
        "file": file,
        "sha256": null,
        "input": {"name": "input", "resolution": 224, "layout": "NCHW"},
        "preprocessing": {"crop_padding": 32, "resize": "bicubic", "mean": [127.0, 127.0, 127.0], "std": [128.0, 128.0, 128.0]},
        "output": {"name": "logits", "classes": 2},
        "labels": "labels.tsv",
        "parameters": 4652008,
        "evaluation": [],
    })
    .to_string()
}

fn write_repo(models: &[(&str, &str, Option<&str>)]) -> tempfile::TempDir {
    let root = tempfile::tempdir().unwrap();
    fs::write(
        root.path().join("labels.tsv"),
        "index\twnid\tname\n0\tn01440764\ttench\n1\tn01443537\tgoldfish\n",
    )
    .unwrap();
    for (name, state, file) in models {
        let dir = root.path().join(name);
        fs::create_dir(&dir).unwrap();
        fs::write(dir.join(MANIFEST_FILE), manifest_json(name, state, *file)).unwrap();
        if let Some(file) = file {
            fs::write(dir.join(file), b"onnx").unwrap();
        }
    }
    root
}

#[test]
fn opens_available_and_unavailable_models() {
    let root = write_repo(&[
        ("efficientnet-lite0-fp32", "available", Some("model.onnx")),
        ("efficientnet-lite3-fp32", "unavailable", None),
    ]);

    let repo = Repository::open(root.path()).unwrap();

    assert_eq!(repo.models.len(), 2);
    assert!(repo.models["efficientnet-lite0-fp32"].model_path.is_some());
    assert!(repo.models["efficientnet-lite3-fp32"].model_path.is_none());
    assert_eq!(repo.labels.len(), 2);
    assert_eq!(repo.labels.index_of_wnid("n01443537"), Some(1));
}

#[test]
fn missing_model_file_is_rejected() {
    let root = write_repo(&[("efficientnet-lite0-fp32", "available", Some("model.onnx"))]);
    fs::remove_file(root.path().join("efficientnet-lite0-fp32/model.onnx")).unwrap();

    let err = Repository::open(root.path()).unwrap_err().to_string();

    assert!(err.contains("model file"), "{err}");
    assert!(err.contains("is missing"), "{err}");
}

#[test]
fn name_must_match_directory() {
    let root = write_repo(&[("efficientnet-lite0-fp32", "available", Some("model.onnx"))]);
    fs::rename(
        root.path().join("efficientnet-lite0-fp32"),
        root.path().join("other"),
    )
    .unwrap();

    let err = Repository::open(root.path()).unwrap_err().to_string();

    assert!(err.contains("does not match its directory"), "{err}");
}

#[test]
fn class_count_must_match_labels() {
    let root = write_repo(&[("efficientnet-lite0-fp32", "available", Some("model.onnx"))]);
    fs::write(
        root.path().join("labels.tsv"),
        "index\twnid\tname\n0\tn01440764\ttench\n",
    )
    .unwrap();

    let err = Repository::open(root.path()).unwrap_err().to_string();

    assert!(err.contains("2 classes but the labels file has 1"), "{err}");
}

#[test]
fn empty_repository_is_rejected() {
    let root = tempfile::tempdir().unwrap();

    let err = Repository::open(root.path()).unwrap_err();

    assert!(matches!(err, Error::Empty { .. }), "{err}");
}

#[test]
fn labels_with_gaps_are_rejected() {
    let root = tempfile::tempdir().unwrap();
    let path = root.path().join("labels.tsv");
    fs::write(&path, "index\twnid\tname\n0\ta\tx\n2\tb\ty\n").unwrap();

    let err = Labels::read(&path).unwrap_err().to_string();

    assert!(err.contains("index \"2\", expected 1"), "{err}");
}
