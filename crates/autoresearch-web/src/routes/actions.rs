//! The actions (vote, fork): only for requests carrying the token.

use super::*;

/// The actions of a request carrying the right token: 403 on a read-only
/// dashboard or with a wrong token, 401 without one.
pub(super) fn authorize(
    s: &AppState,
    headers: &HeaderMap,
) -> Result<Arc<dyn crate::Actions>, WebError> {
    let Access::Token { token, actions } = &s.config.access else {
        return Err(WebError::Forbidden(
            "this dashboard is read-only (`autoresearch serve --read-only`): it takes no actions"
                .into(),
        ));
    };
    let given = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim)
        .ok_or(WebError::Unauthorized)?;
    // Compare every byte, so the time taken does not say how much matched.
    let same = given.len() == token.len()
        && given
            .bytes()
            .zip(token.bytes())
            .fold(0u8, |acc, (a, b)| acc | (a ^ b))
            == 0;
    if !same {
        return Err(WebError::Forbidden(
            "the token does not match the one `autoresearch serve` printed".into(),
        ));
    }
    Ok(actions.clone())
}

pub(super) fn parse_body<T: serde::de::DeserializeOwned + Default>(
    body: &Bytes,
    what: &str,
) -> Result<T, WebError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(T::default());
    }
    serde_json::from_slice(body)
        .map_err(|e| WebError::BadRequest(format!("the {what} request's JSON body: {e}")))
}

fn action_error(e: ActionError) -> WebError {
    match e {
        ActionError::Refused(m) => WebError::Conflict(m),
        ActionError::Failed(m) => WebError::Ledger {
            doing: "writing to the ledger".into(),
            message: m,
        },
    }
}

/// A short free-text field of a request: trimmed, at most `max` bytes, no
/// control characters.
pub(super) fn text_field(
    name: &str,
    v: Option<String>,
    max: usize,
) -> Result<Option<String>, WebError> {
    let Some(v) = v.map(|v| v.trim().to_string()).filter(|v| !v.is_empty()) else {
        return Ok(None);
    };
    if v.len() > max || v.chars().any(char::is_control) {
        return Err(WebError::BadRequest(format!(
            "{name} must be at most {max} bytes of text without control characters"
        )));
    }
    Ok(Some(v))
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct VoteBody {
    verdict: Option<String>,
    reason: Option<String>,
    voter: Option<String>,
}

pub(super) async fn vote(
    State(s): State<Arc<AppState>>,
    Path((world, run)): Path<(String, String)>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<(StatusCode, axum::Json<ActionReceipt>), WebError> {
    let actions = authorize(&s, &headers)?;
    let body: VoteBody = parse_body(&body, "vote")?;
    let verdict = match body.verdict.as_deref() {
        None => {
            return Err(WebError::BadRequest(
                "a vote needs a verdict: {\"verdict\": \"keep\"} or {\"verdict\": \"discard\"}"
                    .into(),
            ));
        }
        Some(v) => VoteVerdict::known(v)
            .ok_or_else(|| WebError::BadRequest(format!("verdict {v:?} is not keep or discard")))?,
    };
    let reason = text_field("reason", body.reason, 2000)?.unwrap_or_default();
    let voter = text_field("voter", body.voter, 100)?.unwrap_or_else(|| "dashboard".into());
    let info = s.view.world(&world).await?;
    let live = s.view.live(&info).await?;
    let idx = live.read().await;
    let (_, row) = idx
        .run(&run)
        .ok_or_else(|| WebError::NotFound(format!("no run {run:?} in world {:?}", info.name)))?;
    if row.class() != RowClass::Pending {
        return Err(WebError::Conflict(format!(
            "run {run} is not waiting for votes (it is {})",
            row.class().as_str()
        )));
    }
    let request = VoteRequest {
        world: info.name.clone(),
        experiment: row.run.experiment_name.clone(),
        run_id: row.run.run_id.clone(),
        verdict,
        voter,
        reason,
    };
    drop(idx);
    let receipt = actions.vote(request).await.map_err(action_error)?;
    Ok((StatusCode::OK, axum::Json(receipt)))
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct ForkBody {
    at: Option<u64>,
    name: Option<String>,
}

pub(super) async fn fork(
    State(s): State<Arc<AppState>>,
    Path((world, run)): Path<(String, String)>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<(StatusCode, axum::Json<ActionReceipt>), WebError> {
    let actions = authorize(&s, &headers)?;
    let body: ForkBody = parse_body(&body, "fork")?;
    let name = text_field("name", body.name, 100)?;
    let info = s.view.world(&world).await?;
    let at = Tick(body.at.unwrap_or(info.head.0));
    if at > info.head || at == Tick::ZERO {
        return Err(WebError::BadRequest(format!(
            "cannot fork world {:?} at tick {}: ticks run from 1 to its head, {}",
            info.name, at.0, info.head.0
        )));
    }
    if let Some(n) = &name
        && s.view
            .storage()
            .find_world(n)
            .await
            .ok()
            .flatten()
            .is_some()
    {
        return Err(WebError::Conflict(format!(
            "a world named {n:?} already exists"
        )));
    }
    let live = s.view.live(&info).await?;
    let idx = live.read().await;
    let (_, row) = idx
        .run(&run)
        .ok_or_else(|| WebError::NotFound(format!("no run {run:?} in world {:?}", info.name)))?;
    if row.run.commit_hash.is_empty() {
        return Err(WebError::Conflict(format!(
            "run {run} has no commit to make head (it never produced a candidate)"
        )));
    }
    let request = ForkRequest {
        world: info.name.clone(),
        experiment: row.run.experiment_name.clone(),
        run_id: row.run.run_id.clone(),
        at,
        name,
    };
    drop(idx);
    let receipt = actions.fork(request).await.map_err(action_error)?;
    Ok((StatusCode::CREATED, axum::Json(receipt)))
}
