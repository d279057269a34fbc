#!/bin/sh
# Serves public/ with busybox httpd on a free loopback port and checks the
# pages: the front page, its link, the dynamic page.
set -eu
chmod 755 public/cgi-bin/*

# A free port: start httpd on one port after the other until one binds.
port=$((20000 + $$ % 20000))
tries=0
while :; do
    busybox httpd -f -p "127.0.0.1:$port" -h public &
    httpd=$!
    sleep 0.3
    kill -0 "$httpd" 2>/dev/null && break
    tries=$((tries + 1))
    [ "$tries" -lt 20 ] || { echo "no free port for httpd" >&2; exit 1; }
    port=$((port + 1))
done
trap 'kill "$httpd"' EXIT
site="http://127.0.0.1:$port"

get() {
    busybox wget -q -O - "$site$1"
}
page=$(get /)
echo "$page" | grep -q '<title>cd-site</title>' || { echo "/ has no title" >&2; exit 1; }
version=$(echo "$page" | sed -n 's|.*<span id="version">\([^<]*\)</span>.*|\1|p')
[ -n "$version" ] || { echo "/ shows no version" >&2; exit 1; }
echo "$page" | grep -q 'href="/cgi-bin/hello"' || { echo "/ does not link to /cgi-bin/hello" >&2; exit 1; }
hello=$(get /cgi-bin/hello)
[ "$hello" = "hello from cd-site $version" ] || {
    echo "/cgi-bin/hello says \"$hello\", not the front page's version $version" >&2
    exit 1
}
echo "pages of cd-site $version pass on $site"
