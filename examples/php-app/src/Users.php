<?php
// The example application's users: sign-up, log-in, an encrypted profile,
// search by email through a blind index, a nightly job, erasure. Every
// field that names or describes a person is stored only as an `atrf:`
// envelope sealed by keyd; the database alone reveals none of them.
//
// Scopes (see README.md):
//   user:<id>        the user's profile and uploaded document; made with a
//                    client share, which lives only in the user's cookie
//   notify:<id>      a copy of the email for the nightly mail; no share,
//                    opened only inside the daily window the operator sets
//   directory:users  the key of the email blind index (shared by all rows,
//                    so that log-in can find a row before knowing whose it is)

declare(strict_types=1);

namespace ExampleApp;

use Atrest\AtrestError;
use Atrest\Client;

final class Users
{
    public const DIRECTORY = 'directory:users';
    /** Fields of the profile, sealed under the user's scope (table `users`). */
    public const PROFILE = ['email', 'name', 'phone'];
    /** The email's blind index: 64 bits (emails are unique; see README.md for the leakage). */
    private const EMAIL_INDEX = [
        'scope' => self::DIRECTORY,
        'table' => 'users',
        'index' => 'email',
        'columns' => ['email'],
        'bits' => 64,
        'normalize' => ['trim', 'lowercase'],
    ];

    public function __construct(private readonly \PDO $db, private readonly Client $keyd)
    {
        $this->db->setAttribute(\PDO::ATTR_ERRMODE, \PDO::ERRMODE_EXCEPTION);
    }

    /** Creates the tables and the directory scope; run once (it is idempotent). */
    public function install(): void
    {
        $this->db->exec('CREATE TABLE IF NOT EXISTS users (
            id TEXT PRIMARY KEY,
            email_index TEXT UNIQUE,          -- blind index, NULL once erased
            email TEXT NOT NULL,              -- atrf: envelopes from here on
            name TEXT NOT NULL,
            phone TEXT NOT NULL,
            password_hash TEXT NOT NULL,
            created_at INTEGER NOT NULL,
            erased_at INTEGER)');
        $this->db->exec('CREATE TABLE IF NOT EXISTS notify (
            user_id TEXT PRIMARY KEY REFERENCES users(id),
            email TEXT NOT NULL)');
        try {
            $this->keyd->createScope(self::DIRECTORY, false);
        } catch (AtrestError $e) {
            if ($e->errorCode !== 'scope_exists') {
                throw $e;
            }
        }
    }

    /**
     * Signs a user up. Returns the user's id and the client share, which
     * the caller puts in the user's cookie and nowhere else.
     * @return array{id: string, client_share: string}
     */
    public function signUp(string $email, string $password, string $name, string $phone): array
    {
        $email = trim($email);
        $emailIndex = $this->emailIndex($email);
        if ($this->rowByIndex($emailIndex) !== null) {
            throw new \InvalidArgumentException("$email already has an account: log in instead");
        }
        $id = self::uuid();
        $share = $this->keyd->createScope("user:$id", true)['client_share_secret'];
        $this->keyd->createScope("notify:$id", false);
        // One request seals the whole row, in both scopes.
        $sealed = $this->keyd->encrypt([
            self::item($id, 'email', $email, $share),
            self::item($id, 'name', $name, $share),
            self::item($id, 'phone', $phone, $share),
            ['scope' => "notify:$id", 'table' => 'notify', 'column' => 'email', 'row' => $id, 'value' => $email],
        ]);
        $this->db->beginTransaction();
        $this->db->prepare('INSERT INTO users (id, email_index, email, name, phone, password_hash, created_at)
                            VALUES (?, ?, ?, ?, ?, ?, ?)')
            ->execute([$id, $emailIndex, $sealed[0], $sealed[1], $sealed[2],
                       password_hash($password, PASSWORD_DEFAULT), time()]);
        $this->db->prepare('INSERT INTO notify (user_id, email) VALUES (?, ?)')->execute([$id, $sealed[3]]);
        $this->db->commit();
        return ['id' => $id, 'client_share' => $share];
    }

    /**
     * Finds the user by the email's blind index and checks the password.
     * Returns the user's id, or null when the email or password is wrong.
     */
    public function logIn(string $email, string $password): ?string
    {
        $row = $this->rowByIndex($this->emailIndex($email));
        if ($row === null || !password_verify($password, $row['password_hash'])) {
            return null;
        }
        return $row['id'];
    }

    /**
     * The user's profile, opened with the share from the user's cookie
     * (keyd refuses without it: `client_share_required`).
     * @return array<string,string>
     */
    public function profile(string $id, string $share): array
    {
        $row = $this->row($id);
        $items = [];
        foreach (self::PROFILE as $column) {
            $items[] = self::item($id, $column, $row[$column], $share);
        }
        return array_combine(self::PROFILE, $this->keyd->decrypt($items));
    }

    /** Changes one profile field (not the email, which would need a new index). */
    public function updateProfile(string $id, string $share, string $column, string $value): void
    {
        if (!in_array($column, ['name', 'phone'], true)) {
            throw new \InvalidArgumentException("$column is not an editable profile field (name, phone)");
        }
        $this->row($id);
        [$sealed] = $this->keyd->encrypt([self::item($id, $column, $value, $share)]);
        $this->db->prepare("UPDATE users SET $column = ? WHERE id = ?")->execute([$sealed, $id]);
    }

    /**
     * Stores the user's document (an upload): sealed by keyd on the way in,
     * written to the files directory, bound to the user's scope and to the
     * object `<id>/document` (table `uploads`).
     */
    public function uploadDocument(string $id, string $share, string $path): void
    {
        $this->row($id);
        $source = fopen($path, 'rb') ?: throw new \InvalidArgumentException("cannot read $path");
        $target = $this->documentPath($id);
        $partial = "$target.partial";
        $sink = fopen($partial, 'wb') ?: throw new \RuntimeException("cannot write $partial");
        try {
            $this->keyd->encryptFile("user:$id", 'uploads', "$id/document", $source, $sink, $share);
        } finally {
            fclose($source);
            fclose($sink);
        }
        rename($partial, $target);
    }

    /**
     * The user's document, opened with the share from the user's cookie,
     * written to $sink only once keyd has opened it to its end (nothing of
     * a damaged file is passed on).
     * @param resource $sink
     */
    public function document(string $id, string $share, $sink): void
    {
        $this->row($id);
        $path = $this->documentPath($id);
        $source = @fopen($path, 'rb') ?: throw new \InvalidArgumentException("user $id has no document");
        // In memory only: php://temp would spill a large document to an
        // unencrypted temporary file. Documents larger than memory belong
        // in a temporary file on an encrypted mount (an atrest vault).
        $plain = fopen('php://memory', 'w+b');
        try {
            $this->keyd->decryptFile("user:$id", 'uploads', "$id/document", $source, $plain, $share);
            rewind($plain);
            stream_copy_to_stream($plain, $sink);
        } finally {
            fclose($source);
            fclose($plain);
        }
    }

    /**
     * The nightly job: the email of every user, from the notify scopes,
     * which keyd opens only inside their window (`outside_window` else).
     * Erased users are left out.
     * @return array<string,string> user id => email
     */
    public function nightlyRecipients(): array
    {
        $rows = $this->db->query('SELECT n.user_id, n.email FROM notify n JOIN users u ON u.id = n.user_id
                                  WHERE u.erased_at IS NULL ORDER BY u.rowid')->fetchAll();
        if ($rows === []) {
            return [];
        }
        $items = array_map(fn ($r) => ['scope' => "notify:{$r['user_id']}", 'table' => 'notify',
            'column' => 'email', 'row' => $r['user_id'], 'value' => $r['email']], $rows);
        $out = [];
        // Batches of keyd's maximum; a batch is refused as a whole.
        foreach (array_chunk($items, 1000) as $chunk) {
            foreach ($this->keyd->decrypt($chunk) as $i => $email) {
                $out[$chunk[$i]['row']] = $email;
            }
        }
        return $out;
    }

    /**
     * Erasure, the application's half: the row can no longer be found by
     * email and is marked erased. Returns the scopes the operator shreds
     * (`atrest scope shred SCOPE --yes`: an app token cannot shred), after
     * which this row, and every copy of it in backups, never decrypts again.
     * @return list<string>
     */
    public function erase(string $id): array
    {
        $this->row($id);
        $this->db->prepare('UPDATE users SET email_index = NULL, erased_at = ? WHERE id = ?')->execute([time(), $id]);
        return ["user:$id", "notify:$id"];
    }

    public function idByEmail(string $email): ?string
    {
        return $this->rowByIndex($this->emailIndex($email))['id'] ?? null;
    }

    /** Where a user's sealed document lives: next to the database unless APP_FILES says. */
    private function documentPath(string $id): string
    {
        $dir = getenv('APP_FILES') ?: dirname((string) getenv('APP_DB')) . '/files';
        if (!is_dir($dir) && !mkdir($dir, 0700, true) && !is_dir($dir)) {
            throw new \RuntimeException("cannot create $dir");
        }
        return "$dir/$id.document";
    }

    private function emailIndex(string $email): string
    {
        return $this->keyd->index([self::EMAIL_INDEX + ['values' => [$email]]])[0];
    }

    private function rowByIndex(string $index): ?array
    {
        $query = $this->db->prepare('SELECT * FROM users WHERE email_index = ?');
        $query->execute([$index]);
        $row = $query->fetch(\PDO::FETCH_ASSOC);
        return $row === false ? null : $row;
    }

    private function row(string $id): array
    {
        $query = $this->db->prepare('SELECT * FROM users WHERE id = ?');
        $query->execute([$id]);
        $row = $query->fetch(\PDO::FETCH_ASSOC);
        if ($row === false) {
            throw new \InvalidArgumentException("no user $id");
        }
        return $row;
    }

    /** A field of the user's profile: bound to scope, table, column and row. */
    private static function item(string $id, string $column, string $value, string $share): array
    {
        return ['scope' => "user:$id", 'table' => 'users', 'column' => $column, 'row' => $id,
                'value' => $value, 'client_share' => $share];
    }

    private static function uuid(): string
    {
        $b = random_bytes(16);
        $b[6] = chr((ord($b[6]) & 0x0f) | 0x40);
        $b[8] = chr((ord($b[8]) & 0x3f) | 0x80);
        return vsprintf('%s%s-%s-%s-%s-%s%s%s', str_split(bin2hex($b), 4));
    }
}
