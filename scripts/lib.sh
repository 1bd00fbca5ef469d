# Helpers the benchmark scripts share (source it: `. scripts/lib.sh`).

# A free TCP port on 127.0.0.1.
free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

# start_nginx_hello WORKDIR PORT: nginx on CPU 1 with one worker, no
# logging, `return 200 "Hello, World!"` on /hello (the workload's /hello
# body), and unlimited keep-alive requests (nginx's default of 1000 would
# make clients reconnect, which these benchmarks do not measure). Returns
# once nginx has written its pid file.
start_nginx_hello() {
  local work=$1 port=$2
  cat > "$work/nginx.conf" <<CONF
worker_processes 1;
daemon off;
pid $work/nginx.pid;
error_log $work/error.log;
events { worker_connections 4096; }
http {
  access_log off;
  keepalive_requests 100000000;
  server {
    listen 127.0.0.1:$port;
    location = /hello { default_type text/plain; return 200 "Hello, World!"; }
  }
}
CONF
  taskset -c 1 nginx -c "$work/nginx.conf" -p "$work" &
  for _ in $(seq 50); do [ -s "$work/nginx.pid" ] && break; sleep 0.1; done
}
