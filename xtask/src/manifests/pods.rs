//! What the schemas cannot check of a render: that every `memprof` container came through
//! `deploy/base` (image, metrics port, probes), and that a PodMonitor selects memprof pods of
//! the render and scrapes a port they name.
use serde_json::Value;

/// The pod template of a workload, if the object is one.
fn pod_template(o: &Value) -> Option<&Value> {
    let t = &o["spec"]["template"];
    t.is_object().then_some(t)
}

/// What `deploy/base` gives every `memprof` container.
pub(super) fn memprof_containers(objects: &[Value]) -> Vec<String> {
    let mut failed = Vec::new();
    let mut found = 0;
    for o in objects {
        let Some(template) = pod_template(o) else {
            continue;
        };
        let containers = template["spec"]["containers"].as_array();
        for c in containers.into_iter().flatten() {
            if c["name"] != "memprof" {
                continue;
            }
            found += 1;
            let workload = format!(
                "{}/{}",
                o["kind"].as_str().unwrap_or("?"),
                o["metadata"]["name"].as_str().unwrap_or("?")
            );
            let port = c["ports"]
                .as_array()
                .into_iter()
                .flatten()
                .any(|p| p["name"] == "metrics" && p["containerPort"] == 9400);
            let probe = |kind: &str, path: &str| c[kind]["httpGet"]["path"] == path;
            let missing: Vec<&str> = [
                ("image", c["image"].is_string()),
                ("metrics port 9400", port),
                (
                    "liveness probe /healthz",
                    probe("livenessProbe", "/healthz"),
                ),
                // A sidecar's readiness would be its application pod's: only the node's
                // DaemonSet has one, and a sidecar must not.
                (
                    "readiness probe /readyz as its mode wants",
                    probe("readinessProbe", "/readyz") == (o["kind"] == "DaemonSet"),
                ),
                (
                    "prometheus.io/scrape annotation",
                    template["metadata"]["annotations"]["prometheus.io/scrape"] == "true",
                ),
            ]
            .into_iter()
            .filter(|(_, ok)| !ok)
            .map(|(what, _)| what)
            .collect();
            if !missing.is_empty() {
                let hint = match missing.contains(&"image") {
                    true => {
                        " (deploy/base patches only workloads labelled memprof/enabled: \"true\")"
                    }
                    false => "",
                };
                failed.push(format!(
                    "{workload}: its memprof container lacks {}{hint}",
                    missing.join(", ")
                ));
            }
        }
    }
    if found == 0 {
        failed.push("no memprof container rendered".into());
    }
    failed
}

/// What the schemas cannot check of a PodMonitor: that it selects a memprof pod of the render
/// and scrapes a port that pod names.
pub(super) fn custom_objects(objects: &[Value]) -> Vec<String> {
    let mut failed = Vec::new();
    for monitor in objects.iter().filter(|o| o["kind"] == "PodMonitor") {
        let name = monitor["metadata"]["name"].as_str().unwrap_or("?");
        let Some(labels) = monitor["spec"]["selector"]["matchLabels"].as_object() else {
            failed.push(format!("PodMonitor/{name}: no spec.selector.matchLabels"));
            continue;
        };
        let selected: Vec<&Value> = objects
            .iter()
            .filter_map(pod_template)
            .filter(|t| {
                labels
                    .iter()
                    .all(|(k, v)| t["metadata"]["labels"][k.as_str()] == *v)
            })
            .collect();
        if selected.is_empty() {
            failed.push(format!("PodMonitor/{name}: selects no pod of the render"));
        }
        let endpoints = monitor["spec"]["podMetricsEndpoints"].as_array();
        if endpoints.is_none_or(|e| e.is_empty()) {
            failed.push(format!("PodMonitor/{name}: no podMetricsEndpoints"));
        }
        for endpoint in endpoints.into_iter().flatten() {
            let port = &endpoint["port"];
            let named = |t: &&Value| {
                t["spec"]["containers"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .flat_map(|c| c["ports"].as_array().into_iter().flatten())
                    .any(|p| p["name"] == *port)
            };
            if !selected.iter().all(named) {
                failed.push(format!(
                    "PodMonitor/{name}: port {port} is not named by every pod it selects"
                ));
            }
        }
    }
    failed
}
