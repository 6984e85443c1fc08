//! `refacen search`: the stored faces nearest to the faces of a photo: from the active space
//! of the Tarantool search store when one is configured, else by brute force over the face
//! store's facens.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, bail};
use clap::Args;

use super::GuestArgs;
use super::stores::ExistingStoresArgs;
use refacen_face::{Metric, parse_params};
use refacen_imaging::{DecodeLimits, align, decode_rgb};
use refacen_pipeline::model_input;
use refacen_runtime::World;
use refacen_store::tarantool::TarantoolStore;
use refacen_store::{BruteForce, FaceId, FacePages, FaceStore, Hit, brute_force_search};

#[derive(Args, Debug)]
pub struct SearchArgs {
    /// The query photo.
    #[arg(value_name = "IMAGE")]
    pub image: PathBuf,

    /// How many nearest faces to return per face of the photo.
    #[arg(long, value_name = "K", default_value_t = 5, value_parser = clap::value_parser!(u16).range(1..=10000))]
    pub top: u16,

    /// Detector for the query photo.
    #[arg(long, value_name = "NAME|PATH", default_value = "nnd")]
    pub detector: String,

    /// Model: must be the one the stored facens were computed with. Default: the model of the
    /// search store's active space, or without --tarantool, the one model whose facens the
    /// face store holds.
    #[arg(long, value_name = "NAME|PATH")]
    pub model: Option<String>,

    /// Set a detector parameter; repeatable.
    #[arg(long = "param", value_name = "NAME=VALUE")]
    pub params: Vec<String>,

    /// Distance between facens: `l2` (Euclidean; dlib's same-person threshold is 0.6) or
    /// `cosine` (1 - cosine similarity).
    #[arg(long, value_name = "l2|cosine", default_value_t = Metric::L2)]
    pub metric: Metric,

    /// Print JSON: one object per query face.
    #[arg(long)]
    pub json: bool,

    #[command(flatten)]
    pub stores: ExistingStoresArgs,

    #[command(flatten)]
    pub guest: GuestArgs,
}

pub fn run(args: &SearchArgs) -> anyhow::Result<ExitCode> {
    let tokio = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let (store, search) = tokio.block_on(args.stores.open())?;

    let model = match &args.model {
        Some(model) => model.clone(),
        None => tokio.block_on(stored_model(store.as_ref(), search.as_deref()))?,
    };

    let runtime = args.guest.runtime()?;
    let guest_dir = args.guest.guest_dir();
    let mut detector = runtime.detector(runtime.resolve(&args.detector, World::Detector, &guest_dir)?)?;
    let model_component = runtime.resolve(&model, World::Embedder, &guest_dir)?;
    let mut embedder = runtime.embedder(model_component.clone())?;
    let params = parse_params(&detector.info().params, &args.params, &detector.info().name.clone())
        .map_err(anyhow::Error::msg)?;

    let photo = decode_rgb(&args.image, &DecodeLimits::default())?;
    let faces = detector.detect(&photo, &params)?;
    if faces.is_empty() {
        eprintln!("search: no face in {}", args.image.display());
        return Ok(ExitCode::FAILURE);
    }
    let template = embedder.info().template.clone();
    // As `regenerate` does: to the canonical chip, then to the model's template.
    let inputs = faces
        .iter()
        .map(|f| {
            let chip = align::warp(&photo, &f.landmarks, &align::CANONICAL).map_err(|e| e.to_string())?;
            model_input(&chip, &template)
        })
        .collect::<Result<Vec<_>, String>>()
        .map_err(anyhow::Error::msg)
        .context("normalizing the query faces")?;
    let queries = embedder.embed(&inputs)?;
    let top = usize::from(args.top);

    let (hits, searched) = match &search {
        Some(search) => {
            let model = (embedder.info().name.as_str(), embedder.info().facen_size);
            tokio.block_on(search_space(search, store.as_ref(), model, &queries, top, args.metric))?
        }
        None => {
            let sha256 = &model_component.sha256;
            let BruteForce { hits, compared, other_models } =
                tokio.block_on(brute_force_search(store.as_ref(), sha256, &queries, top, args.metric))?;
            if compared == 0 {
                bail!(
                    "the store holds no facens of model `{}` ({}{}); run `refacen regenerate --regenerate facens --model {}`",
                    embedder.info().name,
                    &sha256[..12],
                    if other_models > 0 {
                        format!(", {other_models} faces have facens of other models")
                    } else {
                        String::new()
                    },
                    model
                );
            }
            (hits, format!("{compared} stored faces compared"))
        }
    };
    for (i, (face, hits)) in faces.iter().zip(&hits).enumerate() {
        if args.json {
            crate::outln!("{}", serde_json::json!({ "face": i, "bbox": face.bbox, "nearest": hits }));
        } else {
            let [x1, y1, x2, y2] = face.bbox;
            crate::outln!("face {i} [{x1:.0}, {y1:.0}, {x2:.0}, {y2:.0}]:");
            for hit in hits {
                crate::outln!(
                    "  {:>8.4}  face {:<8} {}",
                    hit.distance,
                    hit.id,
                    refacen_store::PhotoName::display_of_key(&hit.photo)
                );
            }
        }
    }
    eprintln!("search: {} face(s) in the photo, model `{}`; {searched}", faces.len(), embedder.info().name);
    Ok(ExitCode::SUCCESS)
}

/// The model a search without --model uses: the one the search store's active space holds
/// facens of, or without a search store, the one whose facens the face store's faces hold.
async fn stored_model(store: &dyn FaceStore, search: Option<&TarantoolStore>) -> anyhow::Result<String> {
    if let Some(search) = search {
        return match search.active_space().await? {
            Some(active) => Ok(active.model_name),
            None => bail!(
                "{} has no active search space yet, so search cannot tell which model to use: give --model, \
                 or switch search to a model with `refacen sync-search --model NAME --activate`",
                search.location()
            ),
        };
    }
    let mut models: BTreeMap<String, u64> = BTreeMap::new();
    let mut pages = FacePages::new(store, 1, 1024);
    while let Some(page) = pages.next_page().await? {
        for facen in page.iter().filter(|f| !f.lost).filter_map(|f| f.facen.as_ref()) {
            *models.entry(facen.model.name.clone()).or_default() += 1;
        }
    }
    let mut names = models.keys();
    match (names.next(), names.next()) {
        (Some(only), None) => Ok(only.clone()),
        (None, _) => bail!(
            "{} holds no facens to search: run `refacen regenerate` with a model first",
            store.location()
        ),
        _ => {
            let counts: Vec<String> = models.iter().map(|(name, n)| format!("{name} ({n} faces)")).collect();
            bail!("{} holds facens of several models: {}; give --model", store.location(), counts.join(", "))
        }
    }
}

/// The `top` nearest per query in the search store's active space, which must hold facens of
/// `model` (name, facen size); photos are looked up in the face store.
async fn search_space(
    search: &TarantoolStore,
    store: &dyn FaceStore,
    (model, facen_size): (&str, u32),
    queries: &[Vec<f32>],
    top: usize,
    metric: Metric,
) -> anyhow::Result<(Vec<Vec<Hit>>, String)> {
    let Some(active) = search.active_space().await? else {
        bail!(
            "{} has no active search space yet: run `refacen sync-search --model {model} --activate`",
            search.location()
        );
    };
    if active.model_name != model || active.facen_size != facen_size {
        bail!(
            "the active search space `{}` holds facens of model `{}` ({} values), the query faces were embedded \
             with `{model}` ({facen_size} values): search with --model {}, or switch search to this model with \
             `refacen sync-search --model {model} --activate`",
            active.name,
            active.model_name,
            active.facen_size,
            active.model_name
        );
    }
    let mut all = Vec::new();
    for query in queries {
        let found = search.search(&active.name, query, top, metric).await?;
        let ids: Vec<FaceId> = found.iter().map(|(id, _)| *id).collect();
        let photos: std::collections::HashMap<FaceId, String> =
            store.faces(&ids).await?.into_iter().map(|f| (f.id, f.photo)).collect();
        all.push(
            found
                .into_iter()
                .map(|(id, distance)| Hit {
                    id,
                    photo: photos.get(&id).cloned().unwrap_or_else(|| "(not in the face store)".into()),
                    distance,
                })
                .collect(),
        );
    }
    let searched = format!("{} facens in space `{}` of {}", active.count, active.name, search.location());
    Ok((all, searched))
}
