#!/bin/sh
# Prints the site's app definition (Marathon's JSON) for this commit's
# image: two instances behind the router's service port $SITE_PORT,
# deployed as a canary that the router's measurements promote or roll back.
set -eu
cat <<JSON
{
  "id": "$APP_ID",
  "instances": 2,
  "cpus": 0.1,
  "mem": 32,
  "networks": [{"mode": "container/bridge"}],
  "container": {
    "type": "DOCKER",
    "docker": {"image": "$SITE_IMAGE:$CI_COMMIT_SHORT_SHA"},
    "portMappings": [
      {"containerPort": 80, "hostPort": 0, "servicePort": $SITE_PORT, "name": "http"}
    ]
  },
  "healthChecks": [
    {"protocol": "MESOS_HTTP", "path": "/index.html", "portIndex": 0,
     "gracePeriodSeconds": 10, "intervalSeconds": 2, "timeoutSeconds": 1,
     "maxConsecutiveFailures": 3}
  ],
  "labels": {"commit": "$CI_COMMIT_SHA"},
  "deployment": {
    "strategy": "canary",
    "canary": {
      "steps": [{"weight": 20}, {"pause": 60}, {"weight": 100}],
      "analysis": {"intervalSeconds": 10, "minRequests": 20, "maxErrorRate": 0.05}
    }
  }
}
JSON
