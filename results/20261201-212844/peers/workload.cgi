#!/bin/sh
# The CGI/1.1 program (RFC 3875) that fcgiwrap runs for the iomodels
# workload: a fork + exec of /bin/sh per request, as CGI was deployed.
# GET /hello is answered here with shell built-ins only, so its cost is
# the CGI model's own: fork, exec of the shell, a few writes, exit. Every
# other route execs the PHP command line on workload.php beside this file
# (its CGI mode writes the same bytes as php-fpm), so those rows include
# PHP's start-up (tens of milliseconds) per request.
# fcgiwrap passes the FastCGI params as the whole environment: no PATH.
PATH=${PATH:-/usr/local/bin:/usr/bin:/bin}
target=${REQUEST_URI:-$SCRIPT_NAME$PATH_INFO${QUERY_STRING:+?$QUERY_STRING}}
if [ "$REQUEST_METHOD" = GET ] && [ "$target" = /hello ]; then
  printf 'Status: 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 13\r\nServer: iomodels-cgi\r\nX-Worker: %s\r\n\r\nHello, World!' "$$"
  exit 0
fi
exec php -f "${0%/*}/workload.php"
