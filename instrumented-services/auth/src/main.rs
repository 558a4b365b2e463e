//! `demo-auth`: issues bearer tokens for the demo accounts (`POST /api/login` at the gateway)
//! and verifies them for the gateway on every authenticated request.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use clap::Parser;
use demo_contracts::auth_server::{Auth, AuthServer};
use demo_contracts::{LoginRequest, LoginResponse, VerifyRequest, VerifyResponse};
use demo_kernel::{seed, CustomerId, ErrorCode};
use demo_platform::db::Database;
use demo_platform::grpc::error;
use demo_platform::process::{CommonArgs, Process};
use rusqlite::OptionalExtension;
use tonic::{Request, Response, Status};

/// Token issuer and verifier of the demo.
#[derive(Parser)]
#[command(version, about)]
struct Args {
    #[command(flatten)]
    common: CommonArgs,
    /// How long an issued token stays valid, in seconds.
    #[arg(long, env = "DEMO_TOKEN_TTL", default_value_t = 3600)]
    token_ttl: u64,
}

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS accounts (
    username TEXT PRIMARY KEY,
    password TEXT NOT NULL,
    customer_id TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS tokens (
    token TEXT PRIMARY KEY,
    customer_id TEXT NOT NULL,
    expires_at_unix_ms INTEGER NOT NULL
);";

struct AuthService {
    db: Database,
    token_ttl: Duration,
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// 128 random bits as hex: unguessable enough for a demo (fastrand is not a CSPRNG; a real
/// service would use the OS generator).
fn new_token() -> String {
    format!("{:016x}{:016x}", fastrand::u64(..), fastrand::u64(..))
}

#[tonic::async_trait]
impl Auth for AuthService {
    #[tracing::instrument(skip_all, fields(enduser.id = %request.get_ref().username))]
    async fn login(&self, request: Request<LoginRequest>) -> Result<Response<LoginResponse>, Status> {
        let LoginRequest { username, password } = request.into_inner();
        let account = self
            .db
            .run("SELECT", "accounts", move |c| {
                c.query_row(
                    "SELECT customer_id FROM accounts WHERE username = ?1 AND password = ?2",
                    [&username, &password],
                    |row| row.get::<_, String>(0),
                )
                .optional()
            })
            .await?;
        let customer_id =
            account.ok_or_else(|| error(ErrorCode::InvalidCredentials, "unknown user or wrong password"))?;
        let token = new_token();
        let expires_at_unix_ms = now_ms() + self.token_ttl.as_millis() as u64;
        let (stored_token, stored_customer) = (token.clone(), customer_id.clone());
        self.db
            .run("INSERT", "tokens", move |c| {
                c.execute(
                    "INSERT INTO tokens (token, customer_id, expires_at_unix_ms) VALUES (?1, ?2, ?3)",
                    rusqlite::params![stored_token, stored_customer, expires_at_unix_ms as i64],
                )
            })
            .await?;
        Ok(Response::new(LoginResponse {
            token,
            customer_id,
            expires_at_unix_ms,
        }))
    }

    async fn verify(&self, request: Request<VerifyRequest>) -> Result<Response<VerifyResponse>, Status> {
        let token = request.into_inner().token;
        let now = now_ms() as i64;
        let customer = self
            .db
            .run("SELECT", "tokens", move |c| {
                c.query_row(
                    "SELECT customer_id FROM tokens WHERE token = ?1 AND expires_at_unix_ms > ?2",
                    rusqlite::params![token, now],
                    |row| row.get::<_, String>(0),
                )
                .optional()
            })
            .await?;
        let customer_id =
            customer.ok_or_else(|| error(ErrorCode::InvalidToken, "unknown or expired token"))?;
        Ok(Response::new(VerifyResponse { customer_id }))
    }
}

fn seed_sql() -> String {
    let mut sql = String::from(SCHEMA);
    for (username, number, _) in seed::CUSTOMERS {
        let id = CustomerId::new(number).expect("seed ids have six digits");
        sql.push_str(&format!(
            "INSERT OR IGNORE INTO accounts VALUES ('{username}', '{}', '{id}');\n",
            seed::PASSWORD
        ));
    }
    sql
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let process = Process::start("auth", args.common).await?;
    let db = Database::open(&process.args.data_dir, "auth.sqlite", &seed_sql())?;
    let service = AuthService {
        db,
        token_ttl: Duration::from_secs(args.token_ttl),
    };
    process
        .serve_grpc(tonic::service::Routes::new(AuthServer::new(service)))
        .await
}
