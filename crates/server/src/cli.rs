//! The offline subcommands: `classify` local files and `bench` the stages,
//! both through the same service code as the server.

use std::{path::PathBuf, sync::Arc, time::Duration};

use anyhow::Context as _;
use bytes::Bytes;

use crate::{
    config::{Config, ServeArgs},
    serve,
    service::{ClassifyRequest, InferenceService},
};

#[derive(Debug, clap::Args)]
pub struct ClassifyArgs {
    /// Model name or alias, e.g. efficientnet-lite0-fp32 or efficientnet-lite0.
    #[arg(long)]
    model: String,

    /// Classes to print per image.
    #[arg(long, default_value_t = 5)]
    top_k: usize,

    /// Image files to classify.
    #[arg(required = true)]
    files: Vec<PathBuf>,

    #[command(flatten)]
    serve: ServeArgs,
}

#[derive(Debug, clap::Args)]
pub struct BenchArgs {
    /// Folder of images to time (JPEG, PNG, ...).
    #[arg(long, env = "EFFNET_IMAGENET_SAMPLE_IMAGES")]
    images: PathBuf,

    /// Images per model.
    #[arg(long, default_value_t = 50)]
    count: usize,

    /// Only models whose name contains this text.
    #[arg(long)]
    filter: Option<String>,

    #[command(flatten)]
    serve: ServeArgs,
}

pub async fn classify(args: ClassifyArgs) -> anyhow::Result<()> {
    let service = start_offline(&args.serve, |name| {
        name == args.model || name.starts_with(&format!("{}-", args.model))
    })
    .await?;

    for file in &args.files {
        let bytes =
            std::fs::read(file).with_context(|| format!("failed to read {}", file.display()))?;
        let outcome = service
            .classify(ClassifyRequest {
                model: args.model.clone(),
                images: vec![Bytes::from(bytes)],
                top_k: args.top_k,
                timeout: None,
                request_id: crate::service::new_request_id(),
            })
            .await
            .with_context(|| format!("failed to classify {}", file.display()))?;

        println!("{} ({})", file.display(), outcome.model.name());
        for class in &outcome.images[0].classes {
            println!(
                "  {:>7.4}  {:>4}  {}  {}",
                class.score, class.index, class.wnid, class.label
            );
        }
    }
    Ok(())
}

pub async fn bench(args: BenchArgs) -> anyhow::Result<()> {
    let filter = args.filter.clone().unwrap_or_default();
    let service = start_offline(&args.serve, |name| name.contains(&filter)).await?;

    let mut files: Vec<PathBuf> = std::fs::read_dir(&args.images)
        .with_context(|| format!("failed to read {}", args.images.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.is_file())
        .collect();
    files.sort();
    files.truncate(args.count);
    let images: Vec<Bytes> = files
        .iter()
        .map(|f| std::fs::read(f).map(Bytes::from))
        .collect::<Result<_, _>>()?;
    anyhow::ensure!(!images.is_empty(), "no images in {}", args.images.display());

    println!("| model | images | decode ms | preprocess ms | inference ms (batch 1) |");
    println!("| --- | ---: | ---: | ---: | ---: |");
    for model in service.models().iter() {
        if model.session().is_err() {
            continue;
        }
        let mut total = [Duration::ZERO; 3];
        for image in &images {
            let outcome = service
                .classify(ClassifyRequest {
                    model: model.name().to_string(),
                    images: vec![image.clone()],
                    top_k: 1,
                    timeout: None,
                    request_id: String::new(),
                })
                .await?;
            let timings = outcome.images[0].timings;
            total[0] += timings.decode;
            total[1] += timings.preprocess;
            total[2] += timings.inference;
        }
        let per_image = |d: Duration| d.as_secs_f64() * 1000.0 / images.len() as f64;
        println!(
            "| {} | {} | {:.2} | {:.2} | {:.2} |",
            model.name(),
            images.len(),
            per_image(total[0]),
            per_image(total[1]),
            per_image(total[2]),
        );
    }
    Ok(())
}

/// Starts the service without listeners, loading only the models whose
/// names pass `keep`.
async fn start_offline(
    args: &ServeArgs,
    keep: impl Fn(&str) -> bool,
) -> anyhow::Result<Arc<InferenceService>> {
    let mut config = Config::load(args)?;
    serve::init_logging(config.log_format);
    for name in all_model_names(&config)? {
        if !keep(&name) {
            config.models.overrides.entry(name).or_default().enabled = Some(false);
        }
    }

    let (service, engine) = serve::start(config).await?;
    let root = service.config().model_repository.clone();
    service.load_models(engine, &root).await;
    Ok(service)
}

fn all_model_names(config: &Config) -> anyhow::Result<Vec<String>> {
    let repository = effnet_repository::Repository::open(&config.model_repository)?;
    Ok(repository.models.into_keys().collect())
}
