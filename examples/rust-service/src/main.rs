//! Runs the example service's flows against a real keyd and PostgreSQL and
//! checks every answer (examples/rust-service/test.sh runs it):
//!
//!   ATREST_URL=https://127.0.0.1:8443 ATREST_APP_TOKEN=atrapp_… \
//!   ATREST_CA=/var/lib/atrest-keyd/tls/ca.pem DATABASE_URL=postgres://… \
//!   atrest-example-service [erase-check COMPANY CUSTOMER_ID]
//!
//! Without arguments it adds two companies and their customers, looks them
//! up by email and number, checks the table holds no plaintext and that an
//! envelope moved to another row is refused, then prints `company NAME ID`
//! for each company's first customer. With `shredded COMPANY ID` it checks
//! that the customer no longer decrypts (after `atrest scope shred`).

use anyhow::{Context, bail, ensure};
use atrest_example_service::{Customers, Keyd};
use sqlx::postgres::PgPoolOptions;

fn env(name: &str) -> anyhow::Result<String> {
    std::env::var(name).with_context(|| {
        format!("set {name} (ATREST_URL, ATREST_APP_TOKEN, ATREST_CA, DATABASE_URL)")
    })
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let ca = std::fs::read(env("ATREST_CA")?).context("reading ATREST_CA")?;
    let keyd = Keyd::new(&env("ATREST_URL")?, &env("ATREST_APP_TOKEN")?, &ca)?;
    let db = PgPoolOptions::new()
        .max_connections(2)
        .connect(&env("DATABASE_URL")?)
        .await
        .context("connecting to DATABASE_URL")?;
    let customers = Customers::new(db, keyd);
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.as_slice() {
        [] => demo(&customers).await,
        [cmd, company, id] if cmd == "shredded" => {
            match customers.get(id).await {
                Err(e) if e.code() == Some("scope_shredded") => {}
                other => bail!("customer {id} of {company} after the shred: {other:?}"),
            }
            println!("customer {id} of {company} no longer decrypts");
            Ok(())
        }
        _ => bail!("usage: atrest-example-service [shredded COMPANY CUSTOMER_ID]"),
    }
}

async fn demo(customers: &Customers) -> anyhow::Result<()> {
    customers.install().await?;
    // Fresh company names per run: the table may hold earlier runs.
    let run: String = sqlx::query_scalar("SELECT substr(md5(random()::text), 1, 8)")
        .fetch_one(customers.db())
        .await?;
    let (acme, globex) = (format!("acme-{run}"), format!("globex-{run}"));
    customers.add_company(&acme).await?;
    customers.add_company(&globex).await?;
    customers.add_company(&acme).await?; // idempotent

    let ada = customers
        .add(&acme, "Ada@Acme.example", "Ada Lovelace", "CUST-0042")
        .await?;
    let bob = customers
        .add(&acme, "bob@acme.example", "Bob Babbage", "CUST-0043")
        .await?;
    let gus = customers
        .add(&globex, "ada@acme.example", "Gus Globex", "CUST-0042")
        .await?;

    // Lookups through the blind indexes, normalised.
    let found = customers
        .find_by_email(&acme, "  ada@ACME.example ")
        .await?
        .context("ada not found by email")?;
    ensure!(found.id == ada && found.name == "Ada Lovelace", "{found:?}");
    let found = customers.find_by_number(&acme, "cust 0043").await?;
    ensure!(found.len() == 1 && found[0].id == bob, "{found:?}");
    // The same email and number in another company: another scope, another index.
    let found = customers
        .find_by_email(&globex, "ada@acme.example")
        .await?
        .context("gus not found")?;
    ensure!(found.id == gus && found.name == "Gus Globex", "{found:?}");
    ensure!(
        customers
            .find_by_email(&acme, "nobody@acme.example")
            .await?
            .is_none()
    );

    // The table holds envelopes and index values only.
    let raw: Vec<(String, String, String, String, String)> = sqlx::query_as(
        "SELECT email, name, number, email_index, number_index FROM example_customers
         WHERE company IN ($1, $2)",
    )
    .bind(&acme)
    .bind(&globex)
    .fetch_all(customers.db())
    .await?;
    ensure!(raw.len() == 3);
    for (email, name, number, email_index, number_index) in &raw {
        for sealed in [email, name, number] {
            ensure!(sealed.starts_with("atrf:"), "{sealed} is stored in clear");
        }
        // Whole values: a short word ("Gus") turns up by chance in the
        // base64url of an envelope about once in a few hundred runs.
        for plain in [
            "Ada Lovelace",
            "Bob Babbage",
            "Gus Globex",
            "acme.example",
            "CUST-0042",
            "CUST-0043",
        ] {
            let row = format!("{email}{name}{number}");
            ensure!(!row.contains(plain), "{plain} in a stored row");
        }
        ensure!(email_index.len() == 16 && number_index.len() == 4);
    }
    // Ada's and Gus's rows have the same email and number, in other scopes:
    // their index values differ.
    let index_of = |id: &str| {
        sqlx::query_scalar::<_, String>("SELECT email_index FROM example_customers WHERE id = $1")
            .bind(id.to_owned())
            .fetch_one(customers.db())
    };
    ensure!(index_of(&ada).await? != index_of(&gus).await?);

    // An envelope copied to another row is refused, never opened.
    sqlx::query(
        "UPDATE example_customers SET name = (SELECT name FROM example_customers WHERE id = $1)
         WHERE id = $2",
    )
    .bind(&ada)
    .bind(&bob)
    .execute(customers.db())
    .await?;
    match customers.get(&bob).await {
        Err(e) if e.code() == Some("authentication_failed") => {}
        other => bail!("a moved envelope: {other:?}"),
    }
    ensure!(customers.get(&ada).await?.context("ada")?.name == "Ada Lovelace");

    println!("company {acme} {ada}");
    println!("company {globex} {gus}");
    Ok(())
}
