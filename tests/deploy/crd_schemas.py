"""Minimal JSON schemas of the custom resources the chart renders.

kubernetes-validate knows only core Kubernetes kinds, so the RayCluster
(KubeRay ray.io/v1) and the Prometheus Operator monitors
(monitoring.coreos.com/v1) are checked against these: the fields the chart
uses, their types, and no field the CRDs do not define. Pod templates inside
a RayCluster are validated separately as core PodTemplateSpecs.
"""

DURATION = r"^(0|(([0-9]+)y)?(([0-9]+)w)?(([0-9]+)d)?(([0-9]+)h)?(([0-9]+)m)?(([0-9]+)s)?(([0-9]+)ms)?)$"

LABEL_SELECTOR = {
    "type": "object",
    "additionalProperties": False,
    "properties": {
        "matchLabels": {"type": "object", "additionalProperties": {"type": "string"}},
        "matchExpressions": {
            "type": "array",
            "items": {
                "type": "object",
                "additionalProperties": False,
                "required": ["key", "operator"],
                "properties": {
                    "key": {"type": "string"},
                    "operator": {"enum": ["In", "NotIn", "Exists", "DoesNotExist"]},
                    "values": {"type": "array", "items": {"type": "string"}},
                },
            },
        },
    },
}

METADATA = {
    "type": "object",
    "required": ["name"],
    "properties": {
        "name": {"type": "string", "pattern": r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$", "maxLength": 63},
        "labels": {"type": "object", "additionalProperties": {"type": "string"}},
        "annotations": {"type": "object", "additionalProperties": {"type": "string"}},
    },
}


def _resource(api_version: str, kind: str, spec: dict) -> dict:
    return {
        "type": "object",
        "additionalProperties": False,
        "required": ["apiVersion", "kind", "metadata", "spec"],
        "properties": {"apiVersion": {"const": api_version}, "kind": {"const": kind}, "metadata": METADATA,
                       "spec": spec},
    }


RAY_START_PARAMS = {"type": "object", "additionalProperties": {"type": "string"}}
POD_TEMPLATE = {"type": "object", "required": ["spec"], "properties": {"metadata": {"type": "object"},
                                                                        "spec": {"type": "object"}}}

RAYCLUSTER = _resource("ray.io/v1", "RayCluster", {
    "type": "object",
    "additionalProperties": False,
    "required": ["headGroupSpec"],
    "properties": {
        "rayVersion": {"type": "string", "pattern": r"^\d+\.\d+\.\d+$"},
        "enableInTreeAutoscaling": {"type": "boolean"},
        "autoscalerOptions": {"type": "object"},
        "headServiceAnnotations": {"type": "object"},
        "suspend": {"type": "boolean"},
        "headGroupSpec": {
            "type": "object",
            "additionalProperties": False,
            "required": ["template"],
            "properties": {
                "serviceType": {"enum": ["ClusterIP", "NodePort", "LoadBalancer"]},
                "headService": {"type": "object"},
                "enableIngress": {"type": "boolean"},
                "rayStartParams": RAY_START_PARAMS,
                "template": POD_TEMPLATE,
            },
        },
        "workerGroupSpecs": {
            "type": "array",
            "items": {
                "type": "object",
                "additionalProperties": False,
                "required": ["groupName", "maxReplicas", "template"],
                "properties": {
                    "groupName": {"type": "string", "minLength": 1},
                    "replicas": {"type": "integer", "minimum": 0},
                    "minReplicas": {"type": "integer", "minimum": 0},
                    "maxReplicas": {"type": "integer", "minimum": 0},
                    "numOfHosts": {"type": "integer", "minimum": 1},
                    "idleTimeoutSeconds": {"type": "integer"},
                    "suspend": {"type": "boolean"},
                    "scaleStrategy": {"type": "object"},
                    "rayStartParams": RAY_START_PARAMS,
                    "template": POD_TEMPLATE,
                },
            },
        },
    },
})

_ENDPOINT_PROPERTIES = {
    "port": {"type": "string"},
    "targetPort": {"type": ["string", "integer"]},
    "path": {"type": "string", "pattern": "^/"},
    "scheme": {"enum": ["http", "https"]},
    "interval": {"type": "string", "pattern": DURATION},
    "scrapeTimeout": {"type": "string", "pattern": DURATION},
    "honorLabels": {"type": "boolean"},
    "tlsConfig": {"type": "object"},
    "relabelings": {"type": "array"},
    "metricRelabelings": {"type": "array"},
}
NAMESPACE_SELECTOR = {
    "type": "object",
    "additionalProperties": False,
    "properties": {"any": {"type": "boolean"}, "matchNames": {"type": "array", "items": {"type": "string"}}},
}

SERVICEMONITOR = _resource("monitoring.coreos.com/v1", "ServiceMonitor", {
    "type": "object",
    "additionalProperties": False,
    "required": ["selector", "endpoints"],
    "properties": {
        "jobLabel": {"type": "string"},
        "selector": LABEL_SELECTOR,
        "namespaceSelector": NAMESPACE_SELECTOR,
        "endpoints": {"type": "array", "minItems": 1,
                      "items": {"type": "object", "additionalProperties": False, "properties": _ENDPOINT_PROPERTIES}},
    },
})

PODMONITOR = _resource("monitoring.coreos.com/v1", "PodMonitor", {
    "type": "object",
    "additionalProperties": False,
    "required": ["selector", "podMetricsEndpoints"],
    "properties": {
        "jobLabel": {"type": "string"},
        "selector": LABEL_SELECTOR,
        "namespaceSelector": NAMESPACE_SELECTOR,
        "podMetricsEndpoints": {"type": "array", "minItems": 1,
                                "items": {"type": "object", "additionalProperties": False,
                                          "properties": _ENDPOINT_PROPERTIES}},
    },
})

CRD_SCHEMAS = {
    ("ray.io/v1", "RayCluster"): RAYCLUSTER,
    ("monitoring.coreos.com/v1", "ServiceMonitor"): SERVICEMONITOR,
    ("monitoring.coreos.com/v1", "PodMonitor"): PODMONITOR,
}
