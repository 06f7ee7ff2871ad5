<?php
// A minimal client of keyd's scoped-encryption API (docs/keyd-api.md,
// "Scoped encryption"): plain PHP and php-curl, no dependencies. Copy this
// file into an existing application; it holds no key, only the app token.

declare(strict_types=1);

namespace Atrest;

/** A refusal by keyd, with its stable code (`scope_shredded`, `outside_window`, ...). */
final class AtrestError extends \RuntimeException
{
    public function __construct(
        public readonly int $status,
        public readonly string $errorCode,
        string $message,
    ) {
        parent::__construct("keyd refused ($status $errorCode): $message");
    }
}

final class Client
{
    /**
     * @param string $baseUrl keyd's address, `https://keyd.example:8443`
     * @param string $token   the app's token (`atrest app add` printed it once): `atrapp_...`
     * @param string $caFile  keyd's CA certificate (`DATA_DIR/tls/ca.pem`)
     */
    public function __construct(
        private readonly string $baseUrl,
        #[\SensitiveParameter] private readonly string $token,
        private readonly string $caFile,
    ) {
    }

    /** Creates a scope (the app's policy must allow `create_scopes`); returns keyd's Scope, plus `client_share_secret` once. */
    public function createScope(string $scope, bool $clientShare): array
    {
        return $this->post('/v1/scoped/scopes', ['scope' => $scope, 'client_share' => $clientShare]);
    }

    /**
     * Seals text fields. Each item: scope, table, column, row, value, and
     * client_share for a scope made with one. Returns the `atrf:` envelopes, in order.
     * @param list<array<string,string>> $items
     * @return list<string>
     */
    public function encrypt(array $items): array
    {
        return $this->post('/v1/scoped/encrypt', ['items' => $items])['values'];
    }

    /**
     * Opens envelopes: the same items, `value` the envelope. Audited by keyd.
     * @param list<array<string,string>> $items
     * @return list<string>
     */
    public function decrypt(array $items): array
    {
        return $this->post('/v1/scoped/decrypt', ['items' => $items])['values'];
    }

    /**
     * Blind-index values (lowercase hex). Each item: scope, table, index,
     * columns, bits, normalize, values (client_share if the scope has one).
     * @param list<array<string,mixed>> $items
     * @return list<string>
     */
    public function index(array $items): array
    {
        return $this->post('/v1/scoped/index', ['items' => $items])['values'];
    }

    /**
     * Seals a file: reads $source (a readable stream: the upload's
     * tmp_name, opened) and writes the sealed stream to $sink (a writable
     * stream), in constant memory. The file is bound to scope, table and
     * object: stored under another object's name, it does not open.
     * @param resource $source
     * @param resource $sink
     */
    public function encryptFile(string $scope, string $table, string $object, $source, $sink,
                                #[\SensitiveParameter] ?string $clientShare = null): void
    {
        $this->stream('encrypt', $scope, $table, $object, $source, $sink, $clientShare);
    }

    /**
     * Opens a sealed file into $sink. Audited by keyd. If this throws, $sink
     * may hold the first part of the file (the chunks that authenticated
     * before the damage): discard it; never serve a stream whose
     * decryptFile did not return. Decrypt into a temporary stream, then
     * pass it on.
     * @param resource $source
     * @param resource $sink
     */
    public function decryptFile(string $scope, string $table, string $object, $source, $sink,
                                #[\SensitiveParameter] ?string $clientShare = null): void
    {
        $this->stream('decrypt', $scope, $table, $object, $source, $sink, $clientShare);
    }

    /** @param resource $source @param resource $sink */
    private function stream(string $op, string $scope, string $table, string $object, $source, $sink,
                            ?string $clientShare): void
    {
        $query = http_build_query(['scope' => $scope, 'table' => $table, 'object' => $object]);
        $headers = ['Content-Type: application/octet-stream', 'Authorization: Bearer ' . $this->token];
        if ($clientShare !== null) {
            $headers[] = 'x-atrest-client-share: ' . $clientShare;
        }
        $curl = curl_init("{$this->baseUrl}/v1/scoped/file/$op?$query");
        // A refusal's JSON body goes to $refusal, a 200's bytes to $sink.
        $refusal = '';
        curl_setopt_array($curl, [
            CURLOPT_UPLOAD => true,
            CURLOPT_CUSTOMREQUEST => 'POST',
            CURLOPT_INFILE => $source,
            CURLOPT_INFILESIZE => fstat($source)['size'],
            CURLOPT_HTTPHEADER => $headers,
            CURLOPT_WRITEFUNCTION => function ($curl, string $bytes) use ($sink, &$refusal): int {
                if (curl_getinfo($curl, CURLINFO_RESPONSE_CODE) === 200) {
                    return fwrite($sink, $bytes) === strlen($bytes) ? strlen($bytes) : 0;
                }
                $refusal .= $bytes;
                return strlen($bytes);
            },
            CURLOPT_CAINFO => $this->caFile,
            CURLOPT_SSL_VERIFYPEER => true,
            CURLOPT_SSL_VERIFYHOST => 2,
            CURLOPT_CONNECTTIMEOUT => 5,
        ]);
        $done = curl_exec($curl);
        $status = (int) curl_getinfo($curl, CURLINFO_RESPONSE_CODE);
        $why = curl_error($curl);
        curl_close($curl);
        if ($done === false && $status === 200) {
            // The answer was cut: a chunk failed to authenticate part way.
            throw new \RuntimeException("the file did not $op to its end ($why): it was changed, cut, "
                . "or is another object's; discard what was written");
        }
        if ($done === false) {
            throw new \RuntimeException("cannot reach keyd at {$this->baseUrl}: $why");
        }
        if ($status !== 200) {
            $answer = json_decode($refusal, true);
            throw new AtrestError($status, (string) ($answer['error'] ?? 'unknown'), (string) ($answer['message'] ?? $refusal));
        }
    }

    private function post(string $path, array $body): array
    {
        $curl = curl_init($this->baseUrl . $path);
        curl_setopt_array($curl, [
            CURLOPT_POST => true,
            CURLOPT_POSTFIELDS => json_encode($body, JSON_THROW_ON_ERROR | JSON_UNESCAPED_SLASHES),
            CURLOPT_HTTPHEADER => [
                'Content-Type: application/json',
                'Authorization: Bearer ' . $this->token,
            ],
            CURLOPT_RETURNTRANSFER => true,
            CURLOPT_CAINFO => $this->caFile,
            CURLOPT_SSL_VERIFYPEER => true,
            CURLOPT_SSL_VERIFYHOST => 2,
            CURLOPT_CONNECTTIMEOUT => 5,
            CURLOPT_TIMEOUT => 30,
        ]);
        $text = curl_exec($curl);
        if ($text === false) {
            $why = curl_error($curl);
            curl_close($curl);
            throw new \RuntimeException("cannot reach keyd at {$this->baseUrl}: $why");
        }
        $status = (int) curl_getinfo($curl, CURLINFO_RESPONSE_CODE);
        curl_close($curl);
        $answer = json_decode($text, true);
        if (!is_array($answer)) {
            throw new \RuntimeException("keyd answered $status with something that is not JSON");
        }
        if ($status !== 200) {
            throw new AtrestError($status, (string) ($answer['error'] ?? 'unknown'), (string) ($answer['message'] ?? ''));
        }
        return $answer;
    }
}
