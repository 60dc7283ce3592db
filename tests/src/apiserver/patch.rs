//! JSON merge patch (RFC 7386; also used for strategic-merge and apply
//! patches) and JSON patch (RFC 6902), both from the `json-patch` crate.

use serde_json::Value;

/// Applies an RFC 7386 merge patch to `target`.
pub fn merge(target: &mut Value, patch: &Value) {
    json_patch::merge(target, patch);
}

/// Applies an RFC 6902 JSON patch (add, remove, replace, test, move, copy);
/// on an error `doc` is left as it was.
pub fn json_patch(doc: &mut Value, ops: &Value) -> Result<(), String> {
    let ops: json_patch::Patch = serde_json::from_value(ops.clone()).map_err(|e| format!("invalid JSON patch: {e}"))?;
    json_patch::patch(doc, &ops).map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn merge_patch() {
        let mut t = json!({"a": {"b": 1, "c": 2}, "d": [1]});
        merge(&mut t, &json!({"a": {"b": null, "e": 3}, "d": [2]}));
        assert_eq!(t, json!({"a": {"c": 2, "e": 3}, "d": [2]}));
    }

    #[test]
    fn json_patch_ops() {
        let mut t = json!({"a": {"b": 1}, "l": [1, 2]});
        json_patch(
            &mut t,
            &json!([
                {"op": "add", "path": "/a/c", "value": 3},
                {"op": "replace", "path": "/a/b", "value": 5},
                {"op": "remove", "path": "/l/0"},
                {"op": "add", "path": "/l/-", "value": 9},
                {"op": "test", "path": "/a/c", "value": 3},
            ]),
        )
        .unwrap();
        assert_eq!(t, json!({"a": {"b": 5, "c": 3}, "l": [2, 9]}));
        assert!(json_patch(&mut t, &json!([{"op": "remove", "path": "/zz"}])).is_err());
        assert!(json_patch(&mut t, &json!([{"op": "replace", "path": "/zz", "value": 1}])).is_err());
    }
}
