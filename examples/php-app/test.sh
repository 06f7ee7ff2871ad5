#!/usr/bin/env bash
# End-to-end test of the PHP example against a real `atrest keyd` on
# 127.0.0.1 (run by scripts/test-all.sh):
#
#   ATREST=target/release/atrest bash examples/php-app/test.sh
#
# Needs php-cli with the curl and pdo_sqlite extensions (Debian: php-cli
# php-curl php-sqlite3); without them it fails, it does not skip.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
ATREST="$(realpath "${ATREST:?set ATREST to the atrest binary, e.g. target/release/atrest}")"

fail() { echo "php-app test: FAIL: $*" >&2; exit 1; }
command -v php >/dev/null || fail "php is not installed (apt-get install php-cli php-curl php-sqlite3)"
for ext in curl pdo_sqlite; do
    php -r 'exit(extension_loaded($argv[1]) ? 0 : 1);' "$ext" || fail "PHP lacks the $ext extension (apt-get install php-curl php-sqlite3)"
done

# shellcheck source=../keyd-for-tests.sh
source "$here/../keyd-for-tests.sh"

start_keyd_with_app shop --scope 'user:*,notify:*,directory:users' \
    --field 'users.*,notify.email,uploads.#file' --create-scopes
mkdir "$work/app" # the application's data: its database and its files/
export APP_DB="$work/app/app.sqlite"
cd "$work"

app() { php "$here/bin/example.php" "$@"; }
# expect_fail STATUS CODE-OR-TEXT COMMAND...: the command exits STATUS and says TEXT on stderr.
expect_fail() {
    local status="$1" text="$2" got=0
    shift 2
    "$@" >"$work/out" 2>"$work/err" || got=$?
    [ "$got" = "$status" ] || fail "$* exited $got, not $status: $(cat "$work/out" "$work/err")"
    grep -qF -- "$text" "$work/err" || fail "$* did not say '$text': $(cat "$work/err")"
}
contains() { grep -qF -- "$2" <<<"$1" || fail "expected '$2' in: $1"; }

echo "php-app: sign-up, log-in, profile"
[ "$(app install)" = installed ] || fail "install"
app install >/dev/null # idempotent: the directory scope exists already
alice="$(app --cookies alice.json signup alice@example.org 'correct horse' 'Alice Liddell' '+44 20 7946 0001')"
bob="$(app --cookies bob.json signup bob@example.net 'battery staple' 'Bob Dobbs' '+1 555 0100')"
alice="${alice#signed up }"
bob="${bob#signed up }"
contains "$(php -r 'echo json_encode(json_decode(file_get_contents($argv[1])));' alice.json)" '"atrest_share":"atrcs:'
expect_fail 1 "already has an account" app --cookies other.json signup alice@example.org x y z

# Log-in finds the row by the blind index (normalised: case, spaces).
out="$(app --cookies alice.json login ' Alice@Example.ORG' 'correct horse')"
contains "$out" "logged in $alice"
contains "$out" '"email":"alice@example.org","name":"Alice Liddell","phone":"+44 20 7946 0001"'
expect_fail 3 "wrong email or password" app --cookies alice.json login alice@example.org 'wrong'
expect_fail 3 "wrong email or password" app --cookies alice.json login nobody@example.org 'correct horse'
app --cookies alice.json set phone '+44 20 7946 0002' >/dev/null
contains "$(app --cookies alice.json profile)" '"phone":"+44 20 7946 0002"'

# A browser without the share logs in but cannot open the profile; another
# user's share does not open it either.
contains "$(app --cookies new-browser.json login bob@example.net 'battery staple')" "profile sealed"
sealed_name="$(php -r '$db = new PDO("sqlite:" . getenv("APP_DB"));
    $q = $db->prepare("SELECT name FROM users WHERE id = ?"); $q->execute([$argv[1]]);
    echo $q->fetchColumn();' "$bob")"
expect_fail 2 "keyd: client_share_required" php -r '
    require $argv[1] . "/src/Atrest.php";
    try {
        (new Atrest\Client(getenv("ATREST_URL"), getenv("ATREST_APP_TOKEN"), getenv("ATREST_CA")))
            ->decrypt([["scope" => "user:" . $argv[2], "table" => "users", "column" => "name",
                        "row" => $argv[2], "value" => $argv[3]]]);
    } catch (Atrest\AtrestError $e) { fwrite(STDERR, "keyd: $e->errorCode\n"); exit(2); }' \
    "$here" "$bob" "$sealed_name"
php -r '$c = json_decode(file_get_contents("alice.json"), true); $c["session"] = $argv[1];
        file_put_contents("mixed.json", json_encode($c));' "$bob"
expect_fail 2 "keyd: authentication_failed" app --cookies mixed.json profile

echo "php-app: an uploaded document, sealed on disk"
head -c 300000 /dev/urandom >upload.bin
printf 'alice-document-marker' >>upload.bin
[ "$(app --cookies alice.json upload upload.bin)" = uploaded ] || fail "upload"
stored="$(dirname "$APP_DB")/files/$alice.document"
[ -f "$stored" ] || fail "no sealed document at $stored"
grep -aqF alice-document-marker "$stored" && fail "$stored holds the document in clear"
[ "$(app --cookies alice.json download out.bin)" = downloaded ] || fail "download"
cmp -s upload.bin out.bin || fail "the downloaded document differs from the upload"
cp "$stored" good.document
printf 'X' | dd of="$stored" bs=1 seek=150000 conv=notrunc status=none
rm -f out.bin
expect_fail 4 "did not decrypt to its end" app --cookies alice.json download out.bin
[ ! -s out.bin ] || fail "a damaged document was passed on ($(stat -c %s out.bin) bytes)"
cp good.document "$stored"
cp "$stored" "$(dirname "$APP_DB")/files/$bob.document" # alice's document under bob's name
expect_fail 4 "did not decrypt to its end" app --cookies bob.json download bob.bin

echo "php-app: the database holds no plaintext"
for secret in alice@example.org bob@example.net Alice Liddell Dobbs '+44 20 7946' '555 0100' 'correct horse'; do
    if grep -aqF -- "$secret" "$APP_DB"; then fail "$APP_DB contains '$secret' in clear"; fi
done
grep -aqF 'atrf:' "$APP_DB" || fail "$APP_DB holds no envelopes"
grep -aqF 'atrcs:' "$APP_DB" && fail "$APP_DB holds a client share"

echo "php-app: the nightly window job"
hhmm() { date -u -d "$1" +%H:%M; }
window() { # window START END: for every user's notify scope
    for id in "$alice" "$bob"; do
        "$ATREST" scope window set "notify:$id" --start "$1" --end "$2" --field notify.email >/dev/null
    done
}
window "$(hhmm '+2 hours')" "$(hhmm '+3 hours')"
expect_fail 2 "keyd: outside_window" app nightly
window "$(hhmm '-1 hour')" "$(hhmm '+1 hour')"
out="$(app nightly)"
[ "$out" = "notify $alice alice@example.org
notify $bob bob@example.net" ] || fail "nightly said: $out"

echo "php-app: erasure of one user"
cp "$APP_DB" backup.sqlite # a backup made before the erasure...
# ...and a real one of the whole data directory, database and documents.
"$ATREST" backup init --repo "$work/repo" --key-file "$work/repo.key" --no-recovery-key >/dev/null 2>&1 ||
    fail "atrest backup init"
"$ATREST" backup run "$work/app" --repo "$work/repo" --key-file "$work/repo.key" >/dev/null 2>&1 ||
    fail "atrest backup run"
cp alice.json stolen-cookie.json # ...and alice's cookie, in an attacker's hands
out="$(app --cookies alice.json erase)"
[ "$out" = "shred user:$alice
shred notify:$alice" ] || fail "erase said: $out"
for scope in "user:$alice" "notify:$alice"; do
    "$ATREST" scope shred "$scope" --yes >/dev/null
done
expect_fail 3 "wrong email or password" app --cookies alice.json login alice@example.org 'correct horse'
expect_fail 2 "keyd: scope_shredded" env APP_DB="$work/backup.sqlite" \
    php "$here/bin/example.php" --cookies stolen-cookie.json profile
expect_fail 2 "keyd: scope_shredded" env APP_DB="$work/backup.sqlite" APP_FILES="$(dirname "$APP_DB")/files" \
    php "$here/bin/example.php" --cookies stolen-cookie.json download stolen.bin
"$ATREST" backup restore latest "$work/restored" --repo "$work/repo" --key-file "$work/repo.key" >/dev/null 2>&1 ||
    fail "atrest backup restore"
restored_db="$(find "$work/restored" -name app.sqlite)"
[ -f "$(dirname "$restored_db")/files/$alice.document" ] || fail "the backup lacks alice's document"
for command in profile "download restored.bin"; do
    # shellcheck disable=SC2086 # the command's words
    expect_fail 2 "keyd: scope_shredded" env APP_DB="$restored_db" APP_FILES="$(dirname "$restored_db")/files" \
        php "$here/bin/example.php" --cookies stolen-cookie.json $command
done
[ "$(app nightly)" = "notify $bob bob@example.net" ] || fail "nightly after erasure: $(app nightly)"
contains "$(app --cookies bob.json profile)" '"name":"Bob Dobbs"'

echo "php-app: the audit log"
tail="$("$ATREST" keyd audit tail -n 1000 --json)"
for word in '"decrypted"' outside_window scope_shredded client_share_required authentication_failed 'app:shop'; do
    contains "$tail" "$word"
done
contains "$("$ATREST" keyd audit verify)" intact
echo "php-app: all passed"
