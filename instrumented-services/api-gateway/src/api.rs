//! The REST resources and their translation to gRPC calls.

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::header::AUTHORIZATION;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use demo_contracts::auth_client::AuthClient;
use demo_contracts::inventory_client::InventoryClient;
use demo_contracts::orders_client::OrdersClient;
use demo_contracts::users_client::UsersClient;
use demo_contracts::{
    GetProfileRequest, GetStockRequest, ListOrdersRequest, LoginRequest, PlaceOrderRequest, VerifyRequest,
};
use demo_kernel::{CustomerId, ErrorCode};
use demo_platform::grpc::error_code;
use demo_platform::resilience::{CallError, Downstream};
use serde::{Deserialize, Serialize};
use serde_json::json;

/// The downstream services, one breaker each.
#[derive(Clone)]
pub struct Gateway {
    pub auth: Arc<Downstream>,
    pub users: Arc<Downstream>,
    pub orders: Arc<Downstream>,
    pub inventory: Arc<Downstream>,
}

pub fn router(gateway: Gateway) -> Router {
    Router::new()
        .route("/api/login", post(login))
        .route("/api/users/{id}", get(profile))
        .route("/api/users/{id}/orders", get(profile_with_orders))
        .route("/api/orders", post(place_order))
        .route("/api/products/{sku}", get(product))
        .route("/healthz", get(|| async { "ok\n" }))
        .with_state(gateway)
}

/// An error answer: `{"error": "OUT_OF_STOCK", "message": "…"}` with the code's HTTP status.
#[derive(Debug)]
pub struct ApiError {
    code: ErrorCode,
    message: String,
}

impl ApiError {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
        }
    }
}

impl From<CallError> for ApiError {
    fn from(error: CallError) -> Self {
        let status = error.to_status();
        Self::new(error_code(&status), status.message())
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status =
            StatusCode::from_u16(self.code.http_status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        (
            status,
            Json(json!({"error": self.code.as_str(), "message": self.message})),
        )
            .into_response()
    }
}

type ApiResult<T> = Result<T, ApiError>;

/// The customer the bearer token belongs to, as `auth` says.
async fn authenticate(gateway: &Gateway, headers: &HeaderMap) -> ApiResult<CustomerId> {
    let token = headers
        .get(AUTHORIZATION)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.strip_prefix("Bearer "))
        .ok_or_else(|| {
            ApiError::new(
                ErrorCode::InvalidToken,
                "send Authorization: Bearer <token> (POST /api/login)",
            )
        })?;
    let request = VerifyRequest {
        token: token.to_string(),
    };
    let verified = gateway
        .auth
        .call("Auth/Verify", |channel| {
            let request = request.clone();
            async move { AuthClient::new(channel).verify(request).await }
        })
        .await?;
    let customer: CustomerId = verified
        .customer_id
        .parse()
        .map_err(|e: demo_kernel::InvalidCustomerId| ApiError::new(ErrorCode::Internal, e.to_string()))?;
    tracing::Span::current().record("enduser.id", customer.to_string());
    Ok(customer)
}

fn customer_in_path(id: &str) -> ApiResult<CustomerId> {
    id.parse()
        .map_err(|e: demo_kernel::InvalidCustomerId| ApiError::new(ErrorCode::InvalidRequest, e.to_string()))
}

#[derive(Deserialize)]
struct Credentials {
    username: String,
    password: String,
}

async fn login(
    State(gateway): State<Gateway>,
    Json(credentials): Json<Credentials>,
) -> ApiResult<Json<serde_json::Value>> {
    let request = LoginRequest {
        username: credentials.username,
        password: credentials.password,
    };
    let session = gateway
        .auth
        .call("Auth/Login", |channel| {
            let request = request.clone();
            async move { AuthClient::new(channel).login(request).await }
        })
        .await?;
    Ok(Json(json!({
        "token": session.token,
        "customer_id": session.customer_id,
        "expires_at_unix_ms": session.expires_at_unix_ms,
    })))
}

#[derive(Serialize)]
struct ProfileJson {
    customer_id: String,
    name: String,
    email: String,
    shipping_address: String,
}

impl From<demo_contracts::Profile> for ProfileJson {
    fn from(p: demo_contracts::Profile) -> Self {
        Self {
            customer_id: p.customer_id,
            name: p.name,
            email: p.email,
            shipping_address: p.shipping_address,
        }
    }
}

#[derive(Serialize)]
struct OrderJson {
    order_id: String,
    customer_id: String,
    sku: String,
    quantity: u32,
    status: String,
    created_at_unix_ms: u64,
}

impl From<demo_contracts::Order> for OrderJson {
    fn from(o: demo_contracts::Order) -> Self {
        Self {
            order_id: o.order_id,
            customer_id: o.customer_id,
            sku: o.sku,
            quantity: o.quantity,
            status: o.status,
            created_at_unix_ms: o.created_at_unix_ms,
        }
    }
}

async fn get_profile(gateway: &Gateway, customer: CustomerId) -> ApiResult<ProfileJson> {
    let request = GetProfileRequest {
        customer_id: customer.to_string(),
    };
    let profile = gateway
        .users
        .call("Users/GetProfile", |channel| {
            let request = request.clone();
            async move { UsersClient::new(channel).get_profile(request).await }
        })
        .await?;
    Ok(profile.into())
}

async fn profile(
    State(gateway): State<Gateway>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> ApiResult<Json<ProfileJson>> {
    authenticate(&gateway, &headers).await?;
    Ok(Json(get_profile(&gateway, customer_in_path(&id)?).await?))
}

/// The aggregation: profile and orders fetched concurrently and answered together.
async fn profile_with_orders(
    State(gateway): State<Gateway>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> ApiResult<Json<serde_json::Value>> {
    authenticate(&gateway, &headers).await?;
    let customer = customer_in_path(&id)?;
    let request = ListOrdersRequest {
        customer_id: customer.to_string(),
    };
    let orders = gateway.orders.call("Orders/ListOrders", |channel| {
        let request = request.clone();
        async move { OrdersClient::new(channel).list_orders(request).await }
    });
    let (profile, orders) = tokio::join!(get_profile(&gateway, customer), orders);
    let orders: Vec<OrderJson> = orders?.orders.into_iter().map(Into::into).collect();
    Ok(Json(json!({"profile": profile?, "orders": orders})))
}

#[derive(Deserialize)]
struct NewOrder {
    sku: String,
    quantity: u32,
}

async fn place_order(
    State(gateway): State<Gateway>,
    headers: HeaderMap,
    Json(new_order): Json<NewOrder>,
) -> ApiResult<(StatusCode, Json<OrderJson>)> {
    let customer = authenticate(&gateway, &headers).await?;
    let request = PlaceOrderRequest {
        customer_id: customer.to_string(),
        sku: new_order.sku,
        quantity: new_order.quantity,
    };
    let order = gateway
        .orders
        .call_once("Orders/PlaceOrder", |channel| {
            let request = request.clone();
            async move { OrdersClient::new(channel).place_order(request).await }
        })
        .await?;
    Ok((StatusCode::CREATED, Json(order.into())))
}

async fn product(
    State(gateway): State<Gateway>,
    headers: HeaderMap,
    Path(sku): Path<String>,
) -> ApiResult<Json<serde_json::Value>> {
    authenticate(&gateway, &headers).await?;
    let request = GetStockRequest { sku };
    let stock = gateway
        .inventory
        .call("Inventory/GetStock", |channel| {
            let request = request.clone();
            async move { InventoryClient::new(channel).get_stock(request).await }
        })
        .await?;
    Ok(Json(json!({"sku": stock.sku, "available": stock.available})))
}
