<?php
// The example application's flows from the command line, without a web
// server: each command is what one HTTP request of the app would do. The
// "browser" is a cookie file (--cookies FILE, default ./cookies.json) that
// keeps the session and the client share, as a browser's cookie jar would.
//
//   ATREST_URL=https://127.0.0.1:8443 ATREST_APP_TOKEN=atrapp_... \
//   ATREST_CA=/var/lib/atrest-keyd/tls/ca.pem APP_DB=app.sqlite \
//   php bin/example.php COMMAND [ARGS]
//
// Commands: install | signup EMAIL PASSWORD NAME PHONE | login EMAIL PASSWORD
//           | logout | profile | set name|phone VALUE | upload FILE | download OUT
//           | nightly | erase
// Exit codes: 0 done, 1 usage or application error, 2 keyd refused (its
// code is printed on stderr as "keyd: CODE"), 3 wrong email or password,
// 4 keyd unreachable or a file that did not open to its end.

declare(strict_types=1);

require __DIR__ . '/../src/Atrest.php';
require __DIR__ . '/../src/Users.php';

use Atrest\AtrestError;
use Atrest\Client;
use ExampleApp\Users;

function env(string $name): string
{
    $value = getenv($name);
    if ($value === false || $value === '') {
        fwrite(STDERR, "set $name (see README.md: ATREST_URL, ATREST_APP_TOKEN, ATREST_CA, APP_DB)\n");
        exit(1);
    }
    return $value;
}

/** The cookie jar: what the browser would send with each request. */
final class Cookies
{
    public array $values = [];

    public function __construct(private readonly string $path)
    {
        if (is_file($path)) {
            $this->values = json_decode((string) file_get_contents($path), true, 512, JSON_THROW_ON_ERROR);
        }
    }

    public function save(): void
    {
        $old = umask(0077);
        file_put_contents($this->path, json_encode($this->values, JSON_PRETTY_PRINT | JSON_UNESCAPED_SLASHES) . "\n");
        umask($old);
    }

    public function need(string $name): string
    {
        if (!isset($this->values[$name])) {
            fwrite(STDERR, "not logged in on this browser (no $name cookie): sign up or log in first\n");
            exit(1);
        }
        return $this->values[$name];
    }
}

$args = array_slice($argv, 1);
$cookiePath = 'cookies.json';
if (($args[0] ?? '') === '--cookies') {
    $cookiePath = $args[1] ?? '';
    $args = array_slice($args, 2);
}
$command = array_shift($args) ?? 'help';
$arity = ['install' => 0, 'signup' => 4, 'login' => 2, 'logout' => 0, 'profile' => 0, 'set' => 2,
          'upload' => 1, 'download' => 1, 'nightly' => 0, 'erase' => 0];
if (!isset($arity[$command]) || count($args) !== $arity[$command]) {
    fwrite(STDERR, "usage: example.php [--cookies FILE] install | signup EMAIL PASSWORD NAME PHONE"
        . " | login EMAIL PASSWORD | logout | profile | set name|phone VALUE | upload FILE | download OUT"
        . " | nightly | erase\n");
    exit(1);
}

$keyd = new Client(env('ATREST_URL'), env('ATREST_APP_TOKEN'), env('ATREST_CA'));
$users = new Users(new PDO('sqlite:' . env('APP_DB')), $keyd);
$cookies = new Cookies($cookiePath);

try {
    switch ($command) {
        case 'install':
            $users->install();
            echo "installed\n";
            break;
        case 'signup':
            [$email, $password, $name, $phone] = $args;
            $new = $users->signUp($email, $password, $name, $phone);
            // Set-Cookie: session=...; atrest_share=... (HttpOnly; Secure; SameSite=Strict)
            $cookies->values = ['session' => $new['id'], 'atrest_share' => $new['client_share']];
            $cookies->save();
            echo "signed up {$new['id']}\n";
            break;
        case 'login':
            [$email, $password] = $args;
            $id = $users->logIn($email, $password);
            if ($id === null) {
                fwrite(STDERR, "wrong email or password\n");
                exit(3);
            }
            $cookies->values['session'] = $id;
            $cookies->save();
            echo "logged in $id\n";
            if (!isset($cookies->values['atrest_share'])) {
                // A new browser: the profile stays sealed until the user
                // brings the share (README.md: "Losing the cookie").
                echo "profile sealed: this browser has no key share\n";
                break;
            }
            echo json_encode($users->profile($id, $cookies->values['atrest_share']), JSON_UNESCAPED_SLASHES), "\n";
            break;
        case 'logout':
            unset($cookies->values['session']);
            $cookies->save();
            echo "logged out\n";
            break;
        case 'profile':
            $profile = $users->profile($cookies->need('session'), $cookies->need('atrest_share'));
            echo json_encode($profile, JSON_UNESCAPED_SLASHES), "\n";
            break;
        case 'set':
            [$column, $value] = $args;
            $users->updateProfile($cookies->need('session'), $cookies->need('atrest_share'), $column, $value);
            echo "updated $column\n";
            break;
        case 'upload':
            $users->uploadDocument($cookies->need('session'), $cookies->need('atrest_share'), $args[0]);
            echo "uploaded\n";
            break;
        case 'download':
            $out = fopen($args[0], 'wb') ?: throw new InvalidArgumentException("cannot write {$args[0]}");
            try {
                $users->document($cookies->need('session'), $cookies->need('atrest_share'), $out);
            } finally {
                fclose($out);
            }
            echo "downloaded\n";
            break;
        case 'nightly':
            foreach ($users->nightlyRecipients() as $id => $email) {
                echo "notify $id $email\n";
            }
            break;
        case 'erase':
            // The user deletes the account; the operator then shreds the
            // scopes printed here (an app token cannot shred).
            foreach ($users->erase($cookies->need('session')) as $scope) {
                echo "shred $scope\n";
            }
            $cookies->values = [];
            $cookies->save();
            break;
    }
} catch (AtrestError $e) {
    fwrite(STDERR, $e->getMessage() . "\nkeyd: {$e->errorCode}\n");
    exit(2);
} catch (InvalidArgumentException $e) {
    fwrite(STDERR, $e->getMessage() . "\n");
    exit(1);
} catch (RuntimeException $e) {
    fwrite(STDERR, $e->getMessage() . "\n");
    exit(4);
}
