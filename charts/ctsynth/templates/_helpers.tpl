{{/* Names and labels. */}}
{{- define "ctsynth.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "ctsynth.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 40 | trimSuffix "-" -}}
{{- else -}}
{{- $name := default .Chart.Name .Values.nameOverride -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 40 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 40 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{- define "ctsynth.selectorLabels" -}}
app.kubernetes.io/name: {{ include "ctsynth.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "ctsynth.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{ include "ctsynth.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: ctsynth
{{- end -}}

{{/* Labels of one component: (dict "root" $ "component" "sampling"). */}}
{{- define "ctsynth.componentLabels" -}}
{{ include "ctsynth.labels" .root }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{- define "ctsynth.componentSelector" -}}
{{ include "ctsynth.selectorLabels" .root }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{- define "ctsynth.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "ctsynth.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{/* An image reference: (dict "root" $ "repository" "ctsynth-sampling" "tag" "" "gpu" false). */}}
{{- define "ctsynth.image" -}}
{{- $root := .root -}}
{{- $tag := .tag | default $root.Values.image.tag | default $root.Chart.AppVersion -}}
{{- if .gpu -}}{{- $tag = printf "%s%s" $tag $root.Values.gpu.imageSuffix -}}{{- end -}}
{{- $registry := $root.Values.image.registry | trimSuffix "/" -}}
{{- if $registry -}}
{{- printf "%s/%s:%s" $registry .repository $tag -}}
{{- else -}}
{{- printf "%s:%s" .repository $tag -}}
{{- end -}}
{{- end -}}

{{/* Object store. */}}
{{- define "ctsynth.s3SecretName" -}}
{{- .Values.objectStore.existingSecret | default (printf "%s-s3" (include "ctsynth.fullname" .)) -}}
{{- end -}}

{{- define "ctsynth.s3Endpoint" -}}
{{- if .Values.minio.enabled -}}
{{- printf "http://%s-minio:9000" (include "ctsynth.fullname" .) -}}
{{- else -}}
{{- required "objectStore.endpoint is required when minio.enabled is false" .Values.objectStore.endpoint -}}
{{- end -}}
{{- end -}}

{{- define "ctsynth.storeUri" -}}
{{- $prefix := .Values.objectStore.prefix | trimPrefix "/" | trimSuffix "/" -}}
{{- if $prefix -}}
{{- printf "s3://%s/%s" .Values.objectStore.bucket $prefix -}}
{{- else -}}
{{- printf "s3://%s" .Values.objectStore.bucket -}}
{{- end -}}
{{- end -}}

{{/* CTSYNTH_STORE and CTSYNTH_S3_*; credentials only through secretKeyRef. */}}
{{- define "ctsynth.storeEnv" -}}
- name: CTSYNTH_STORE
  value: {{ include "ctsynth.storeUri" . | quote }}
- name: CTSYNTH_S3_ENDPOINT
  value: {{ include "ctsynth.s3Endpoint" . | quote }}
- name: CTSYNTH_S3_REGION
  value: {{ .Values.objectStore.region | quote }}
- name: CTSYNTH_S3_CREATE_BUCKET
  value: {{ .Values.objectStore.createBucket | ternary "true" "false" | quote }}
- name: CTSYNTH_S3_ACCESS_KEY
  valueFrom:
    secretKeyRef:
      name: {{ include "ctsynth.s3SecretName" . }}
      key: accessKey
- name: CTSYNTH_S3_SECRET_KEY
  valueFrom:
    secretKeyRef:
      name: {{ include "ctsynth.s3SecretName" . }}
      key: secretKey
{{- if .Values.objectStore.caBundle.secretName }}
- name: CTSYNTH_S3_CA_BUNDLE
  value: /etc/ctsynth/s3-ca/{{ .Values.objectStore.caBundle.key }}
{{- end }}
{{- end -}}

{{- define "ctsynth.authSecretName" -}}
{{- .Values.auth.existingSecret | default (printf "%s-auth" (include "ctsynth.fullname" .)) -}}
{{- end -}}

{{/*
Ray token authentication (ray.auth.enabled): RAY_AUTH_MODE and RAY_AUTH_TOKEN for
every Ray process and Ray client (head, workers, autoscaler, training service);
empty when disabled.
*/}}
{{- define "ctsynth.rayAuthEnv" -}}
{{- if .Values.ray.auth.enabled -}}
{{- if not .Values.ray.auth.existingSecret -}}
{{- fail "ray.auth.enabled needs ray.auth.existingSecret: the name of a Secret holding the Ray auth token under the key `token`" -}}
{{- end -}}
- name: RAY_AUTH_MODE
  value: token
- name: RAY_AUTH_TOKEN
  valueFrom:
    secretKeyRef:
      name: {{ .Values.ray.auth.existingSecret }}
      key: token
{{- end -}}
{{- end -}}

{{- define "ctsynth.rayAddress" -}}
{{- if .Values.ray.enabled -}}
{{- printf "http://%s-ray-dashboard:%d" (include "ctsynth.fullname" .) (int .Values.ray.dashboard.port) -}}
{{- else -}}
{{- .Values.ray.externalAddress -}}
{{- end -}}
{{- end -}}

{{/* /tmp (and optionally the S3 CA bundle) volumes every pod of ours mounts. */}}
{{- define "ctsynth.tmpVolume" -}}
- name: tmp
  emptyDir:
    sizeLimit: {{ .sizeLimit }}
{{- end -}}

{{/* Prometheus scrape annotations: (dict "root" $ "port" 9090). */}}
{{- define "ctsynth.scrapeAnnotations" -}}
{{- if .root.Values.metrics.annotations -}}
prometheus.io/scrape: "true"
prometheus.io/port: {{ .port | quote }}
prometheus.io/path: /metrics
{{- end -}}
{{- end -}}

{{/*
One ctsynth service: its Deployment and Service.
(dict "root" $ "name" "sampling" "grpcService" "ctsynth.v1.SamplingService")
*/}}
{{- define "ctsynth.service" -}}
{{- $root := .root -}}
{{- $name := .name -}}
{{- $svc := index $root.Values.services $name -}}
{{- $fullname := printf "%s-%s" (include "ctsynth.fullname" $root) $name -}}
{{- $gpus := and $root.Values.gpu.enabled (gt (int $svc.gpus) 0) -}}
{{- $ctx := dict "root" $root "component" $name -}}
{{- $common := $root.Values.common -}}
{{- $tlsDir := "/etc/ctsynth/tls" -}}
apiVersion: apps/v1
kind: Deployment
metadata:
  name: {{ $fullname }}
  labels:
    {{- include "ctsynth.componentLabels" $ctx | nindent 4 }}
spec:
  {{- if not (and (eq $name "sampling") $svc.autoscaling.enabled) }}
  replicas: {{ $svc.replicas }}
  {{- end }}
  revisionHistoryLimit: 5
  selector:
    matchLabels:
      {{- include "ctsynth.componentSelector" $ctx | nindent 6 }}
  strategy:
    type: RollingUpdate
    rollingUpdate:
      maxUnavailable: 0
      maxSurge: 1
  template:
    metadata:
      labels:
        {{- include "ctsynth.componentLabels" $ctx | nindent 8 }}
        {{- with $common.podLabels }}
        {{- toYaml . | nindent 8 }}
        {{- end }}
      annotations:
        kubectl.kubernetes.io/default-container: {{ $name }}
        {{- include "ctsynth.scrapeAnnotations" (dict "root" $root "port" $common.metricsPort) | nindent 8 }}
        {{- with $common.podAnnotations }}
        {{- toYaml . | nindent 8 }}
        {{- end }}
    spec:
      serviceAccountName: {{ include "ctsynth.serviceAccountName" $root }}
      automountServiceAccountToken: false
      enableServiceLinks: false
      terminationGracePeriodSeconds: {{ add (int $common.graceSeconds) (int $common.terminationExtraSeconds) }}
      securityContext:
        {{- toYaml $root.Values.podSecurityContext | nindent 8 }}
      {{- with $root.Values.image.pullSecrets }}
      imagePullSecrets:
        {{- range . }}
        - name: {{ . }}
        {{- end }}
      {{- end }}
      {{- $nodeSelector := $svc.nodeSelector | default dict }}
      {{- if $gpus }}{{ $nodeSelector = merge (deepCopy $nodeSelector) $root.Values.gpu.nodeSelector }}{{ end }}
      {{- with $nodeSelector }}
      nodeSelector:
        {{- toYaml . | nindent 8 }}
      {{- end }}
      {{- $tolerations := $svc.tolerations | default list }}
      {{- if $gpus }}{{ $tolerations = concat $tolerations $root.Values.gpu.tolerations }}{{ end }}
      {{- with $tolerations }}
      tolerations:
        {{- toYaml . | nindent 8 }}
      {{- end }}
      {{- with $svc.affinity }}
      affinity:
        {{- toYaml . | nindent 8 }}
      {{- end }}
      {{- if $common.waitForStore.enabled }}
      initContainers:
        - name: wait-for-store
          image: {{ include "ctsynth.image" (dict "root" $root "repository" $svc.image.repository "tag" $svc.image.tag "gpu" $gpus) }}
          imagePullPolicy: {{ $root.Values.image.pullPolicy }}
          command: ["python", "/app/bin/wait_for_store.py", "--timeout", {{ $common.waitForStore.timeoutSeconds | quote }}]
          env:
            {{- include "ctsynth.storeEnv" $root | nindent 12 }}
          resources:
            requests: {cpu: 50m, memory: 128Mi}
            limits: {cpu: 500m, memory: 512Mi}
          securityContext:
            {{- toYaml $root.Values.containerSecurityContext | nindent 12 }}
          volumeMounts:
            - name: tmp
              mountPath: /tmp
            {{- if $root.Values.objectStore.caBundle.secretName }}
            - name: s3-ca
              mountPath: /etc/ctsynth/s3-ca
              readOnly: true
            {{- end }}
      {{- end }}
      containers:
        - name: {{ $name }}
          image: {{ include "ctsynth.image" (dict "root" $root "repository" $svc.image.repository "tag" $svc.image.tag "gpu" $gpus) }}
          imagePullPolicy: {{ $root.Values.image.pullPolicy }}
          ports:
            - name: grpc
              containerPort: {{ $common.grpcPort }}
              protocol: TCP
            - name: metrics
              containerPort: {{ $common.metricsPort }}
              protocol: TCP
          env:
            - name: CTSYNTH_HOST
              value: "0.0.0.0"
            - name: CTSYNTH_PORT
              value: {{ $common.grpcPort | quote }}
            - name: CTSYNTH_METRICS_PORT
              value: {{ $common.metricsPort | quote }}
            - name: CTSYNTH_GRACE_SECONDS
              value: {{ $common.graceSeconds | quote }}
            - name: CTSYNTH_LOG_LEVEL
              value: {{ $common.logLevel | quote }}
            - name: CTSYNTH_IMPORT_DIR
              value: {{ $common.importDir | quote }}
            - name: CTSYNTH_WORK_DIR
              value: {{ $common.workDir | quote }}
            {{- include "ctsynth.storeEnv" $root | nindent 12 }}
            {{- if $root.Values.auth.enabled }}
            - name: CTSYNTH_AUTH_TOKEN
              valueFrom:
                secretKeyRef:
                  name: {{ include "ctsynth.authSecretName" $root }}
                  key: token
            {{- end }}
            {{- if $root.Values.tls.enabled }}
            - name: CTSYNTH_TLS_CERT
              value: {{ $tlsDir }}/tls.crt
            - name: CTSYNTH_TLS_KEY
              value: {{ $tlsDir }}/tls.key
            {{- if $root.Values.tls.clientAuth }}
            - name: CTSYNTH_TLS_CLIENT_CA
              value: {{ $tlsDir }}/{{ $root.Values.tls.caKey }}
            {{- end }}
            {{- end }}
            {{- if eq $name "training" }}
            {{- with include "ctsynth.rayAddress" $root }}
            - name: CTSYNTH_RAY_ADDRESS
              value: {{ . | quote }}
            {{- end }}
            - name: CTSYNTH_RAY_DASHBOARD
              value: "0"
            {{- with include "ctsynth.rayAuthEnv" $root }}
            {{- . | nindent 12 }}
            {{- end }}
            {{- end }}
            {{- if eq $name "sampling" }}
            - name: CTSYNTH_SAMPLING_DEVICE
              value: {{ $gpus | ternary "cuda" "cpu" }}
            {{- end }}
            {{- if eq $name "evaluation" }}
            - name: CTSYNTH_EVAL_DEVICE
              value: {{ $gpus | ternary "cuda" "cpu" }}
            {{- end }}
            {{- with $common.env }}
            {{- toYaml . | nindent 12 }}
            {{- end }}
            {{- with $svc.env }}
            {{- toYaml . | nindent 12 }}
            {{- end }}
          {{- $resources := deepCopy ($svc.resources | default dict) }}
          {{- if $gpus }}
          {{- $limits := merge (dict $root.Values.gpu.resourceName (int $svc.gpus | toString)) ($resources.limits | default dict) }}
          {{- $_ := set $resources "limits" $limits }}
          {{- $requests := merge (dict $root.Values.gpu.resourceName (int $svc.gpus | toString)) ($resources.requests | default dict) }}
          {{- $_ := set $resources "requests" $requests }}
          {{- end }}
          resources:
            {{- toYaml $resources | nindent 12 }}
          {{- range $kind := list "startup" "liveness" "readiness" }}
          {{ $kind }}Probe:
            {{- if $root.Values.tls.enabled }}
            exec:
              command:
                - python
                - /app/bin/grpc_health_probe.py
                - --addr
                - 127.0.0.1:{{ $common.grpcPort }}
                - --service
                - {{ $.grpcService }}
                - --tls-ca
                - {{ $tlsDir }}/{{ $root.Values.tls.caKey }}
                - --server-name
                - {{ $fullname }}
                {{- if $root.Values.tls.clientAuth }}
                - --tls-cert
                - {{ $tlsDir }}/tls.crt
                - --tls-key
                - {{ $tlsDir }}/tls.key
                {{- end }}
            {{- else }}
            grpc:
              port: {{ $common.grpcPort }}
              service: {{ $.grpcService }}
            {{- end }}
            {{- $probe := deepCopy (index $common.probes $kind) }}
            {{- if $root.Values.tls.enabled }}
            {{- /* an exec probe starts Python: give it time */}}
            {{- $_ := set $probe "timeoutSeconds" (max (int ($probe.timeoutSeconds | default 1)) 10) }}
            {{- end }}
            {{- toYaml $probe | nindent 12 }}
          {{- end }}
          securityContext:
            {{- toYaml $root.Values.containerSecurityContext | nindent 12 }}
          volumeMounts:
            - name: tmp
              mountPath: /tmp
            {{- if $root.Values.tls.enabled }}
            - name: tls
              mountPath: {{ $tlsDir }}
              readOnly: true
            {{- end }}
            {{- if $root.Values.objectStore.caBundle.secretName }}
            - name: s3-ca
              mountPath: /etc/ctsynth/s3-ca
              readOnly: true
            {{- end }}
      volumes:
        {{- include "ctsynth.tmpVolume" (dict "sizeLimit" $common.tmpSizeLimit) | nindent 8 }}
        {{- if $root.Values.tls.enabled }}
        - name: tls
          secret:
            secretName: {{ required "tls.secretName is required when tls.enabled" $root.Values.tls.secretName }}
            defaultMode: 0440
        {{- end }}
        {{- if $root.Values.objectStore.caBundle.secretName }}
        - name: s3-ca
          secret:
            secretName: {{ $root.Values.objectStore.caBundle.secretName }}
            defaultMode: 0440
        {{- end }}
---
apiVersion: v1
kind: Service
metadata:
  name: {{ $fullname }}
  labels:
    {{- include "ctsynth.componentLabels" $ctx | nindent 4 }}
spec:
  type: ClusterIP
  selector:
    {{- include "ctsynth.componentSelector" $ctx | nindent 4 }}
  ports:
    - name: grpc
      port: {{ $common.grpcPort }}
      targetPort: grpc
      protocol: TCP
      appProtocol: {{ $root.Values.tls.enabled | ternary "grpc" "kubernetes.io/h2c" }}
    - name: metrics
      port: {{ $common.metricsPort }}
      targetPort: metrics
      protocol: TCP
      appProtocol: http
{{- end -}}
