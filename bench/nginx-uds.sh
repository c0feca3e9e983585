#!/usr/bin/env bash
# The classic reverse proxy in front of a process pool, as a benchmark peer: nginx
# (one worker process) with upstream keep-alive to two `ferry-testbed --direct`
# processes (one thread each) over Unix sockets: the same Rust handler ferry runs,
# with HTTP parsed twice instead of a binary hop. The backends are started first and
# nginx is exec'd in this process, so they are in its process tree (the benchmark
# counts the whole tree's CPU) and die with its process group.
#   bash bench/nginx-uds.sh PORT WORKDIR TESTBED
set -euo pipefail
port="$1" dir="$2" testbed="$3"
mkdir -p "$dir"
for i in 0 1; do
    "$testbed" --direct "unix:$dir/backend-$i.sock" --threads 1 &
done
nginx=$(command -v nginx || echo /usr/sbin/nginx)
user=""
if [ "$(id -u)" -eq 0 ]; then user="user root;"; fi
cat > "$dir/nginx.conf" <<CONF
$user
daemon off;
worker_processes 1;
pid $dir/nginx.pid;
error_log $dir/error.log warn;
events { worker_connections 4096; }
http {
    access_log off;
    client_body_temp_path $dir/body;
    proxy_temp_path $dir/proxy;
    fastcgi_temp_path $dir/fcgi;
    uwsgi_temp_path $dir/uwsgi;
    scgi_temp_path $dir/scgi;
    upstream pool {
        server unix:$dir/backend-0.sock;
        server unix:$dir/backend-1.sock;
        keepalive 128;
    }
    server {
        listen 127.0.0.1:$port;
        location / {
            proxy_pass http://pool;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_buffering off;
        }
    }
}
CONF
exec "$nginx" -c "$dir/nginx.conf" -p "$dir"
