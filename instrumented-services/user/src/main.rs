//! `demo-user`: owns customer profiles (name, e-mail, shipping address).

use clap::Parser;
use demo_contracts::users_server::{Users, UsersServer};
use demo_contracts::{GetProfileRequest, Profile};
use demo_kernel::{seed, CustomerId, ErrorCode};
use demo_platform::db::Database;
use demo_platform::grpc::error;
use demo_platform::process::{CommonArgs, Process};
use rusqlite::OptionalExtension;
use tonic::{Request, Response, Status};

/// Customer profiles of the demo.
#[derive(Parser)]
#[command(version, about)]
struct Args {
    #[command(flatten)]
    common: CommonArgs,
}

struct UserService {
    db: Database,
}

#[tonic::async_trait]
impl Users for UserService {
    async fn get_profile(&self, request: Request<GetProfileRequest>) -> Result<Response<Profile>, Status> {
        let customer_id: CustomerId = request
            .into_inner()
            .customer_id
            .parse()
            .map_err(|e: demo_kernel::InvalidCustomerId| error(ErrorCode::InvalidRequest, e.to_string()))?;
        let key = customer_id.to_string();
        let profile = self
            .db
            .run("SELECT", "profiles", move |c| {
                c.query_row(
                    "SELECT name, email, shipping_address FROM profiles WHERE customer_id = ?1",
                    [&key],
                    |row| {
                        Ok(Profile {
                            customer_id: key.clone(),
                            name: row.get(0)?,
                            email: row.get(1)?,
                            shipping_address: row.get(2)?,
                        })
                    },
                )
                .optional()
            })
            .await?;
        profile
            .map(Response::new)
            .ok_or_else(|| error(ErrorCode::UnknownCustomer, format!("no customer {customer_id}")))
    }
}

fn schema() -> String {
    let mut sql = String::from(
        "CREATE TABLE IF NOT EXISTS profiles (
            customer_id TEXT PRIMARY KEY,
            name TEXT NOT NULL,
            email TEXT NOT NULL,
            shipping_address TEXT NOT NULL
        );\n",
    );
    for (username, number, name) in seed::CUSTOMERS {
        let id = CustomerId::new(number).expect("seed ids have six digits");
        sql.push_str(&format!(
            "INSERT OR IGNORE INTO profiles VALUES ('{id}', '{name}', '{username}@example.com', '{number} Demo Street');\n"
        ));
    }
    sql
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let process = Process::start("user", args.common).await?;
    let db = Database::open(&process.args.data_dir, "user.sqlite", &schema())?;
    process
        .serve_grpc(tonic::service::Routes::new(UsersServer::new(UserService { db })))
        .await
}
