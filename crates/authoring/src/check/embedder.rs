//! Checking a model: `info` and its template, every face alone, in a batch and again.

use refacen_face::{AlignmentTemplate, EmbedderInfo};

use super::*;

impl Check<'_> {
    pub(super) fn embedder(
        &self,
        mut embedder: Embedder,
        rec: &mut Recorder,
    ) -> Result<Declared, CheckError> {
        let info = embedder.info().clone();
        if !self.options.params.is_empty() {
            return Err(CheckError::ParamsForModel { name: info.name });
        }
        let t = &info.template;
        model_info(&info, rec);

        let probes = self.model_probes(t, rec)?;

        let first = first_run(
            rec,
            "embed",
            &probes,
            |probe| embed_one(&mut embedder, probe),
            |facen| {
                let norm = facen.iter().map(|v| v * v).sum::<f32>().sqrt();
                format!("{} values, L2 norm {norm:.4}", facen.len())
            },
        );
        let answered: Vec<(&Probe, &Vec<f32>)> =
            probes.iter().zip(&first).filter_map(|(p, f)| f.as_ref().map(|f| (p, f))).collect();

        check_batch(&mut embedder, &answered, rec);

        let again = |probe: &Probe| embed_one(&mut embedder, probe);
        let differences = second_run(rec, "embed again", &answered, again, |facen, again| {
            let d = facen_difference(facen, again);
            (d > 0.0).then_some(d)
        });
        determinism(rec, answered.len(), &differences, 1e-5);
        self.limits(rec, embedder.nn_usage());
        Ok(Declared { name: info.name, version: info.version })
    }

    /// The author's chips and the sample chips, warped to the model's template as the host
    /// hands faces to it.
    fn model_probes(&self, t: &AlignmentTemplate, rec: &mut Recorder) -> Result<Vec<Probe>, CheckError> {
        let mut chips = samples::own(&self.options.samples)
            .map_err(|(path, source)| CheckError::Sample { path, source })?;
        if let Some(odd) =
            chips.iter().find(|c| (c.image.width(), c.image.height()) != (CANONICAL.width, CANONICAL.height))
        {
            return Err(CheckError::SampleSize {
                path: odd.name.clone(),
                width: odd.image.width(),
                height: odd.image.height(),
            });
        }
        chips.extend(samples::chips());
        // The faces as the host hands them to this model: warped to its template.
        let mut probes = Vec::new();
        for chip in chips {
            match refacen_pipeline::model_input(&chip.image, t) {
                Ok(image) => probes.push(Probe { image, ..chip }),
                Err(e) => {
                    rec.fail("template", Some(&chip.name), Reason::Guest(GuestFailureKind::InvalidAnswer), e)
                }
            }
        }

        Ok(probes)
    }
}

/// `info`'s fields and the template's landmarks.
fn model_info(info: &EmbedderInfo, rec: &mut Recorder) {
    let t = &info.template;
    rec.pass(
        "info",
        None,
        format!(
            "model `{}` {}; facen size {}; input {}x{}{}",
            info.name,
            info.version,
            info.facen_size,
            t.width,
            t.height,
            if t.same_geometry(&CANONICAL) { " (refacen's canonical template)" } else { "" }
        ),
    );
    lint_info(rec, &info.version, &info.description, &[]);
    let outside =
        t.landmarks.iter().any(|[x, y]| *x < 0.0 || *y < 0.0 || *x > t.width as f32 || *y > t.height as f32);
    if outside {
        rec.fail(
            "template",
            None,
            Reason::Guest(GuestFailureKind::InvalidAnswer),
            format!("a template landmark lies outside the {}x{} input: {:?}", t.width, t.height, t.landmarks),
        );
    }
}

/// All answered faces in one call must get the facens they got alone, and an empty batch none.
fn check_batch(embedder: &mut Embedder, answered: &[(&Probe, &Vec<f32>)], rec: &mut Recorder) {
    // All answered faces in one call: the facens they got alone.
    let batch: Vec<image::RgbImage> = answered.iter().map(|(p, _)| p.image.clone()).collect();
    let input = format!("{} faces", batch.len());
    match embedder.embed(&batch) {
        Ok(facens) => {
            let worst = answered
                .iter()
                .zip(&facens)
                .map(|((p, alone), batched)| (p.name.as_str(), facen_difference(alone, batched)))
                .fold(("", 0f32), |a, b| if b.1 > a.1 { b } else { a });
            // Graphs may sum in another order at another batch size: float rounding only.
            if worst.1 <= 1e-4 {
                rec.pass(
                    "batch",
                    Some(&input),
                    format!("the facens they get alone (largest difference {:.1e})", worst.1),
                );
            } else {
                rec.fail(
                    "batch",
                    Some(&input),
                    Reason::BatchDiffers,
                    format!(
                        "{} gets another facen in a batch than alone: relative difference {:.1e}",
                        worst.0, worst.1
                    ),
                );
            }
            rec.stats(embedder.last_call(), true);
        }
        Err(e) => {
            rec.fail("batch", Some(&input), Reason::Guest(e.failure.kind()), e.failure.to_string());
            rec.stats(embedder.last_call(), false);
        }
    }
    match embedder.embed(&[]) {
        Ok(_) => rec.pass("batch", Some("no faces"), "no facens".into()),
        Err(e) => rec.fail("batch", Some("no faces"), Reason::Guest(e.failure.kind()), e.failure.to_string()),
    }
}

/// One face's facen, and the call's timing.
fn embed_one(embedder: &mut Embedder, probe: &Probe) -> (Result<Vec<f32>, GuestError>, CallStats) {
    let facens = embedder.embed(std::slice::from_ref(&probe.image));
    (facens.map(|mut facens| facens.pop().expect("checked: one facen per face")), embedder.last_call())
}
