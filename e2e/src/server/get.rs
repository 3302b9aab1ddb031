//! `get` of one object: as stored at the requested version, as a table, metadata only or in
//! protobuf.

use axum::response::Response;
use http::StatusCode;

use super::Api;
use super::route::{Ctx, json_response, protobuf_ok};
use crate::errors::ApiResult;
use crate::store::meta_str;
use crate::table;

impl Api {
    pub(super) fn get(&self, ctx: &Ctx, name: &str) -> ApiResult<Response> {
        let obj = self.get_obj(name)?;
        if ctx.wants_table() {
            let rv = meta_str(&obj, "resourceVersion")
                .unwrap_or_default()
                .to_string();
            return Ok(json_response(
                StatusCode::OK,
                &table::table(&self.info, &[obj], &rv, ""),
                &[],
            ));
        }
        if ctx.wants_protobuf(&self.info) {
            // JSON (the client accepts it too) for what cannot be encoded
            match crate::proto::encode(&self.present(&obj)) {
                Ok(b) => return Ok(protobuf_ok(b)),
                Err(e) => tracing::warn!("protobuf encoding failed, answering JSON: {e}"),
            }
        }
        Ok(self.object_response(ctx, StatusCode::OK, &obj, &[]))
    }
}
