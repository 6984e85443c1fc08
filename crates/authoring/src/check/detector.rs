//! Checking a detector: `info`, every input twice, each parameter.

use super::*;

impl Check<'_> {
    pub(super) fn detector(
        &self,
        mut detector: Detector,
        rec: &mut Recorder,
    ) -> Result<Declared, CheckError> {
        let info = detector.info().clone();
        let params: Vec<String> =
            info.params.iter().map(|p| format!("{} ({:?}, default {})", p.name, p.kind, p.default)).collect();
        rec.pass(
            "info",
            None,
            format!("detector `{}` {}; parameters: {}", info.name, info.version, list(&params)),
        );
        lint_info(rec, &info.version, &info.description, &info.params);
        let base = parse_params(&info.params, &self.options.params, &info.name)
            .map_err(|message| CheckError::Param { message })?;
        let mut probes = samples::own(&self.options.samples)
            .map_err(|(path, source)| CheckError::Sample { path, source })?;
        probes.extend(samples::photos());

        // First run: every probe; the answers each later run is compared with.
        let mut detect = |probe: &Probe| (detector.detect(&probe.image, &base), detector.last_call());
        let first =
            first_run(rec, "detect", &probes, &mut detect, |faces| format!("{} face(s)", faces.len()));
        let answered: Vec<(&Probe, &Vec<Face>)> =
            probes.iter().zip(&first).filter_map(|(p, f)| f.as_ref().map(|f| (p, f))).collect();

        // Second run: the same answers.
        let differences = second_run(rec, "detect again", &answered, detect, |a, b| faces_difference(a, b));
        determinism(rec, answered.len(), &differences, 1e-3);

        // Each parameter at another value than in the first run.
        for spec in &info.params {
            let set_by_operator = base.iter().any(|(n, _)| n == &spec.name);
            let value = if set_by_operator { Some(spec.default.clone()) } else { changed(spec) };
            let Some(value) = value else {
                rec.pass(
                    "param",
                    Some(&spec.name),
                    format!(
                        "a text parameter: checked at its default only; check other values with --param {}=VALUE",
                        spec.name
                    ),
                );
                continue;
            };
            let params = with_param(&base, &spec.name, value.clone());
            self.param_run(&mut detector, rec, &answered, &params, &spec.name, &value);
        }

        // Values the guest must refuse, and refuse cleanly.
        if let Some((probe, _)) = answered.first() {
            let mut bad: Vec<(String, ParamValue)> =
                info.params.iter().map(|s| (s.name.clone(), wrong_kind(s.kind))).collect();
            bad.push(("refacen-check-undeclared".into(), ParamValue::Int(1)));
            for (name, value) in bad {
                let params = with_param(&base, &name, value.clone());
                let answer = detector.detect(&probe.image, &params);
                let stats = detector.last_call();
                let input = format!("{name}={value:?}");
                match answer {
                    Err(e) if e.failure.kind() == GuestFailureKind::ParamRefused => {
                        rec.pass("bad value", Some(&input), e.failure.to_string())
                    }
                    Err(e) if matches!(e.failure, refacen_runtime::GuestFailure::Reported(_)) => rec.warn(
                        "bad value",
                        Some(&input),
                        Reason::BadValueAccepted,
                        format!("refused, but not as `invalid-param`: {}", e.failure),
                    ),
                    Err(e) => rec.fail("bad value", Some(&input), Reason::Guest(e.failure.kind()), e.failure.to_string()),
                    Ok(faces) => rec.warn(
                        "bad value",
                        Some(&input),
                        Reason::BadValueAccepted,
                        format!(
                            "accepted ({} face(s)); it should be refused with `invalid-param` (the host checks \
                             --param against info, other hosts may not)",
                            faces.len()
                        ),
                    ),
                }
                rec.stats(stats, false);
            }
        }
        self.limits(rec, detector.nn_usage());
        Ok(Declared { name: info.name, version: info.version })
    }

    /// One run over the inputs answered in the first run with `params`, stopping at the first
    /// failure.
    pub(super) fn param_run(
        &self,
        detector: &mut Detector,
        rec: &mut Recorder,
        answered: &[(&Probe, &Vec<Face>)],
        params: &[(String, ParamValue)],
        name: &str,
        value: &ParamValue,
    ) {
        let input = format!("{name}={value}");
        let (mut faces_now, mut faces_before) = (0, 0);
        for (probe, faces) in answered {
            match detector.detect(&probe.image, params) {
                Ok(found) => {
                    rec.observe(detector.last_call(), || format!("param {input} {}", probe.name));
                    faces_now += found.len();
                    faces_before += faces.len();
                }
                Err(e) if e.failure.kind() == GuestFailureKind::ParamRefused => {
                    rec.pass("param", Some(&input), format!("refused with a clear error: {}", e.failure));
                    return;
                }
                Err(e) if probe.synthetic && e.failure.kind() == GuestFailureKind::InputRefused => {}
                Err(e) => {
                    rec.fail(
                        "param",
                        Some(&input),
                        Reason::Guest(e.failure.kind()),
                        format!("on {}: {}", probe.name, e.failure),
                    );
                    rec.stats(detector.last_call(), false);
                    return;
                }
            }
        }
        rec.pass(
            "param",
            Some(&input),
            format!(
                "{} input(s) answered: {faces_now} face(s) in all, {faces_before} before",
                answered.len()
            ),
        );
    }
}
