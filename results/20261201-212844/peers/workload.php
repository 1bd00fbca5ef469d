<?php
// The iomodels workload in PHP: every route of DESIGN.md, byte for byte
// the bodies and status codes of workload/src/routes.rs, so the load
// generator verifies php-fpm (directly over FastCGI, or behind nginx) as it
// verifies the models. Run by php-fpm (SCRIPT_FILENAME = this file) or, as
// a CGI program, by the PHP command line (fcgiwrap runs it through
// workload.cgi): the same routes, with the CGI header written by hand.
//
// Settings come from the environment (php-fpm's `env[...]`, or the CGI
// environment): IOMODELS_DATA_DIR (where /file reads from, default: the
// `files` directory beside this script) and IOMODELS_WORKERS (for /status).
//
// /cpu: splitmix64 on u64 with wrapping arithmetic. PHP integers are signed
// 64-bit and overflow into floats, so x is held as two 32-bit halves and
// each product is assembled from 16 × 32-bit partial products (each below
// 2^48, far from overflow). Test vectors (DESIGN.md): n=0 →
// 9e3779b97f4a7c15, n=1 → e99ff867dbf682c9, n=1000 → 3b8da2fb439b1d77,
// n=100000 → b80222d40d1aa62c.

const MAX_CPU_ROUNDS = 1000000000;
const MAX_WAIT_US = 10000000;
const MAX_BYTES = 67108864;
const M32 = 0xFFFFFFFF;

/** Low and high 32 bits of the 64-bit product of two 32-bit values. */
function mul32(int $a, int $b): array
{
    $p0 = ($a & 0xFFFF) * $b;               // < 2^48
    $p1 = ($a >> 16) * $b;                  // < 2^48
    $mid = $p0 + (($p1 & 0xFFFF) << 16);    // < 2^49
    return [$mid & M32, (($p1 >> 16) + ($mid >> 32)) & M32];
}

/** (hi, lo) × (bh, bl) modulo 2^64, as [hi, lo]. */
function mul64(int $hi, int $lo, int $bh, int $bl): array
{
    [$l, $h] = mul32($lo, $bl);
    $h += mul32($hi, $bl)[0] + mul32($lo, $bh)[0];
    return [$h & M32, $l];
}

/** The /cpu computation: n rounds of the splitmix64 mix; 16 hex digits. */
function splitmix(int $n): string
{
    // x = 0x9E3779B97F4A7C15 ^ n (n < 2^30, so only the low half changes).
    $hi = 0x9E3779B9;
    $lo = 0x7F4A7C15 ^ $n;
    for ($i = 0; $i < $n; $i++) {
        // x += 0x9E3779B97F4A7C15
        $lo += 0x7F4A7C15;
        $hi = ($hi + 0x9E3779B9 + ($lo >> 32)) & M32;
        $lo &= M32;
        // x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9
        $lo ^= (($lo >> 30) | ($hi << 2)) & M32;
        $hi ^= $hi >> 30;
        [$hi, $lo] = mul64($hi, $lo, 0xBF58476D, 0x1CE4E5B9);
        // x = (x ^ (x >> 27)) * 0x94D049BB133111EB
        $lo ^= (($lo >> 27) | ($hi << 5)) & M32;
        $hi ^= $hi >> 27;
        [$hi, $lo] = mul64($hi, $lo, 0x94D049BB, 0x133111EB);
        // x ^= x >> 31
        $lo ^= (($lo >> 31) | ($hi << 1)) & M32;
        $hi ^= $hi >> 31;
    }
    return sprintf('%08x%08x', $hi, $lo);
}

/** byte i = 'a' + i % 26. */
function pattern(int $n): string
{
    return substr(str_repeat('abcdefghijklmnopqrstuvwxyz', intdiv($n, 26) + 1), 0, $n);
}

/** The value of query parameter $key, or null (split like routes.rs). */
function param(string $query, string $key): ?string
{
    foreach (explode('&', $query) as $pair) {
        $kv = explode('=', $pair, 2);
        if ($kv[0] === $key) {
            return $kv[1] ?? '';
        }
    }
    return null;
}

/** A number parameter, or the one-line 400 reason as a string in [1]. */
function number(string $query, string $key, int $max, string $missing, string $bad): array
{
    $v = param($query, $key);
    if ($v === null) {
        return [null, $missing];
    }
    if ($v === '' || strlen($v) > 20 || !ctype_digit($v)) {
        return [null, $bad];
    }
    // Compare as strings of digits: a value past PHP_INT_MAX must not wrap.
    $v = ltrim($v, '0');
    if ($v === '') {
        return [0, null];
    }
    if (strlen($v) > strlen((string)$max) || (strlen($v) === strlen((string)$max) && strcmp($v, (string)$max) > 0)) {
        return [null, $bad];
    }
    return [(int)$v, null];
}

function env(string $name): ?string
{
    $v = $_SERVER[$name] ?? getenv($name);
    return ($v === false || $v === null) ? null : (string)$v;
}

$cgi = PHP_SAPI === 'cli';
$phrases = [200 => 'OK', 400 => 'Bad Request', 404 => 'Not Found', 405 => 'Method Not Allowed', 500 => 'Internal Server Error'];
$worker = (string)getmypid();

/** Sends one response: CGI header by hand on the command line, header() under php-fpm. */
function respond(int $status, string $ctype, string $body, array $extra = []): void
{
    global $cgi, $phrases, $worker, $method;
    $headers = array_merge([
        'Content-Type' => $ctype,
        'Content-Length' => (string)strlen($body),
        'Server' => 'iomodels-php',
        'X-Worker' => $worker,
    ], $extra);
    if ($cgi) {
        $head = "Status: $status " . $phrases[$status] . "\r\n";
        foreach ($headers as $n => $v) {
            $head .= "$n: $v\r\n";
        }
        fwrite(STDOUT, $head . "\r\n" . ($method === 'HEAD' ? '' : $body));
        return;
    }
    http_response_code($status);
    foreach ($headers as $n => $v) {
        header("$n: $v");
    }
    if ($method !== 'HEAD') {
        echo $body;
    }
}

$method = env('REQUEST_METHOD') ?? 'GET';
$target = env('REQUEST_URI');
if ($target === null || $target === '') {
    $target = (env('SCRIPT_NAME') ?? '') . (env('PATH_INFO') ?? '');
    $q = env('QUERY_STRING') ?? '';
    if ($q !== '') {
        $target .= '?' . $q;
    }
}
$qpos = strpos($target, '?');
$path = $qpos === false ? $target : substr($target, 0, $qpos);
$query = $qpos === false ? '' : substr($target, $qpos + 1);
$get = $method === 'GET' || $method === 'HEAD';
$known = in_array($path, ['/hello', '/cpu', '/wait', '/bytes', '/file', '/status'], true);

if ($target === '*') {
    // OPTIONS *: what the server allows (200, no body); * is for OPTIONS only.
    $method === 'OPTIONS'
        ? respond(200, 'text/plain', '', ['Allow' => 'GET, HEAD, POST, OPTIONS'])
        : respond(400, 'text/plain', '* is a target for OPTIONS only');
} elseif ($known && !$get) {
    respond(405, 'text/plain', 'method not allowed', ['Allow' => 'GET, HEAD']);
} elseif ($path === '/hello') {
    respond(200, 'text/plain', 'Hello, World!');
} elseif ($path === '/cpu') {
    [$n, $why] = number($query, 'n', MAX_CPU_ROUNDS, 'missing query parameter n', 'n must be an integer from 0 to 1000000000');
    $why === null ? respond(200, 'text/plain', splitmix($n)) : respond(400, 'text/plain', $why);
} elseif ($path === '/wait') {
    [$us, $why] = number($query, 'us', MAX_WAIT_US, 'missing query parameter us', 'us must be an integer from 0 to 10000000');
    if ($why === null) {
        // A blocking wait: the worker process sleeps (php-fpm's model).
        usleep($us);
        respond(200, 'text/plain', "waited $us us");
    } else {
        respond(400, 'text/plain', $why);
    }
} elseif ($path === '/bytes') {
    [$n, $why] = number($query, 'n', MAX_BYTES, 'missing query parameter n', 'n must be an integer from 0 to 67108864');
    $why === null ? respond(200, 'text/plain', pattern($n)) : respond(400, 'text/plain', $why);
} elseif ($path === '/file') {
    $name = param($query, 'name');
    if ($name === null) {
        respond(400, 'text/plain', 'missing query parameter name');
    } elseif ($name === '.' || $name === '..' || strlen($name) > 255 || !preg_match('/^[A-Za-z0-9._-]+$/', $name)) {
        respond(400, 'text/plain', 'name must match [A-Za-z0-9._-]+ and not be . or ..');
    } else {
        $dir = env('IOMODELS_DATA_DIR') ?? __DIR__ . '/files';
        $file = "$dir/$name";
        if (!is_file($file)) {
            respond(404, 'text/plain', 'no such file');
        } else {
            $data = @file_get_contents($file);
            $data === false
                ? respond(500, 'text/plain', 'file could not be read')
                : respond(200, 'application/octet-stream', $data);
        }
    }
} elseif ($path === '/status') {
    // A PHP script sees only its own process: the server-wide counters
    // (requests, connections) are php-fpm's, on its pm.status_path page.
    respond(200, 'application/json', json_encode([
        'model' => 'php',
        'pid' => getmypid(),
        'worker' => $worker,
        'workers' => (int)(env('IOMODELS_WORKERS') ?? 1),
        'requests' => 0,
        'accepted' => 0,
        'connections' => 0,
        'refused' => 0,
        'write_timeouts' => 0,
        'uptime_s' => 0.0,
        'protocol' => $cgi ? 'cgi' : 'fcgi',
    ]));
} elseif ($path === '/echo' && $method === 'POST') {
    $len = (int)(env('CONTENT_LENGTH') ?? 0);
    $body = $cgi ? ($len > 0 ? stream_get_contents(STDIN, $len) : '') : file_get_contents('php://input');
    respond(200, 'application/octet-stream', (string)$body);
} elseif ($path === '/echo') {
    respond(405, 'text/plain', 'method not allowed', ['Allow' => 'POST']);
} else {
    respond(404, 'text/plain', 'not found');
}
