{{/* Chart name. */}}
{{- define "totpgate.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* Full name: release-chart, unless overridden. */}}
{{- define "totpgate.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" -}}
{{- else if contains (include "totpgate.name" .) .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name (include "totpgate.name" .) | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "totpgate.selectorLabels" -}}
app.kubernetes.io/name: {{ include "totpgate.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "totpgate.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
{{ include "totpgate.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end -}}

{{- define "totpgate.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "totpgate.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{/*
totpgate.config renders the sidecar's config.yaml. Secrets never appear
here: they are files mounted from existing Secrets.
*/}}
{{- define "totpgate.config" -}}
{{- $v := .Values -}}
{{- $cfg := dict
  "listen" (printf ":%d" (int $v.sidecar.port))
  "admin_listen" (printf ":%d" (int $v.sidecar.adminPort))
  "upstream" (dict "url" (printf "http://127.0.0.1:%d" (int $v.app.port)))
  "log" (dict "level" $v.sidecar.logLevel)
  "mfa" (dict "issuer" $v.mfa.issuer "policy" $v.mfa.policy "trusted_device_ttl" $v.mfa.trustedDeviceTTL)
  "login" (dict "paths" $v.login.paths "user_id_pointer" $v.login.userIdPointer)
  "identity" (dict "introspect_path" $v.identity.introspectPath "user_id_pointer" $v.identity.userIdPointer)
-}}
{{- if $v.session.credentials -}}
{{- $_ := set $cfg "session" (dict "credentials" $v.session.credentials) -}}
{{- end -}}
{{- if $v.stepUp.routes -}}
{{- $_ := set $cfg "step_up" (dict "routes" $v.stepUp.routes) -}}
{{- end -}}
{{- if $v.sidecar.adminTokenSecret.name -}}
{{- $_ := set $cfg "admin" (dict "token_file" "/etc/totpgate/secrets/admin-token") -}}
{{- end -}}
{{- if eq $v.store.driver "postgres" -}}
{{- $_ := set $cfg "store" (dict "driver" "postgres" "dsn_file" "/etc/totpgate/secrets/dsn" "max_conns" (int $v.store.postgres.maxConns)) -}}
{{- else -}}
{{- $_ := set $cfg "store" (dict "driver" "sqlite" "path" "/var/lib/totpgate/totpgate.db") -}}
{{- end -}}
{{- $keyring := dict "backend" $v.keyring.backend "local_path" "/var/lib/totpgate/keyring.json" -}}
{{- if eq $v.keyring.backend "vault" -}}
{{- $vk := $v.keyring.vault -}}
{{- $auth := dict "method" $vk.auth.method -}}
{{- if eq $vk.auth.method "kubernetes" -}}
{{- $_ := set $auth "role" $vk.auth.role -}}
{{- $_ := set $auth "mount" $vk.auth.mount -}}
{{- $_ := set $auth "service_account_token_file" "/var/run/secrets/kubernetes.io/serviceaccount/token" -}}
{{- else if eq $vk.auth.method "approle" -}}
{{- $_ := set $auth "role_id" $vk.auth.roleId -}}
{{- $_ := set $auth "mount" $vk.auth.mount -}}
{{- $_ := set $auth "secret_id_file" "/etc/totpgate/vault/secret-id" -}}
{{- else -}}
{{- $_ := set $auth "token_file" "/etc/totpgate/vault/token" -}}
{{- end -}}
{{- $vault := dict "address" $vk.address "mount" $vk.mount "key" $vk.key "create_key" $vk.createKey "auth" $auth -}}
{{- if $vk.caSecret -}}
{{- $_ := set $vault "ca_cert" "/etc/totpgate/vault-ca/ca.crt" -}}
{{- end -}}
{{- $_ := set $keyring "vault" $vault -}}
{{- end -}}
{{- $_ := set $cfg "keyring" $keyring -}}
{{- if $v.audit.webhook.url -}}
{{- $_ := set $cfg "audit" (dict "webhook_url" $v.audit.webhook.url "webhook_secret_file" "/etc/totpgate/secrets/webhook-secret") -}}
{{- end -}}
{{- toYaml (mustMergeOverwrite $cfg $v.sidecar.config) -}}
{{- end -}}

{{/*
totpgate.sidecar is the sidecar container. Include it in your own
Deployment's containers to add totpgate to an existing workload:
  containers:
    - name: app
      ...
    {{- include "totpgate.sidecar" . | nindent 4 }}
together with the volumes of "totpgate.volumes" and the ConfigMap.
*/}}
{{- define "totpgate.sidecar" -}}
- name: totpgate
  image: "{{ .Values.sidecar.image.repository }}:{{ .Values.sidecar.image.tag | default .Chart.AppVersion }}"
  imagePullPolicy: {{ .Values.sidecar.image.pullPolicy }}
  args: ["serve", "--config", "/etc/totpgate/config.yaml"]
  ports:
    - name: http
      containerPort: {{ .Values.sidecar.port }}
      protocol: TCP
    - name: admin
      containerPort: {{ .Values.sidecar.adminPort }}
      protocol: TCP
  {{- with .Values.sidecar.extraEnv }}
  env:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  startupProbe:
    httpGet: {path: /healthz, port: admin}
    periodSeconds: 2
    failureThreshold: 30
  livenessProbe:
    httpGet: {path: /healthz, port: admin}
    periodSeconds: 10
    failureThreshold: 3
  readinessProbe:
    httpGet: {path: /readyz, port: admin}
    periodSeconds: 5
    failureThreshold: 2
  resources:
    {{- toYaml .Values.sidecar.resources | nindent 4 }}
  securityContext:
    runAsNonRoot: true
    runAsUser: 65532
    runAsGroup: 65532
    readOnlyRootFilesystem: true
    allowPrivilegeEscalation: false
    capabilities:
      drop: [ALL]
    seccompProfile:
      type: RuntimeDefault
  volumeMounts:
    - name: totpgate-config
      mountPath: /etc/totpgate/config.yaml
      subPath: config.yaml
      readOnly: true
    - name: totpgate-data
      mountPath: /var/lib/totpgate
    {{- if or .Values.sidecar.adminTokenSecret.name .Values.store.postgres.dsnSecret.name .Values.audit.webhook.secret.name }}
    - name: totpgate-secrets
      mountPath: /etc/totpgate/secrets
      readOnly: true
    {{- end }}
    {{- if and (eq .Values.keyring.backend "vault") .Values.keyring.vault.auth.secretName }}
    - name: totpgate-vault
      mountPath: /etc/totpgate/vault
      readOnly: true
    {{- end }}
    {{- if and (eq .Values.keyring.backend "vault") .Values.keyring.vault.caSecret }}
    - name: totpgate-vault-ca
      mountPath: /etc/totpgate/vault-ca
      readOnly: true
    {{- end }}
{{- end -}}

{{/* totpgate.volumes are the volumes the sidecar mounts. */}}
{{- define "totpgate.volumes" -}}
- name: totpgate-config
  configMap:
    name: {{ include "totpgate.fullname" . }}
- name: totpgate-data
  {{- if and (eq .Values.store.driver "sqlite") .Values.store.persistence.enabled }}
  persistentVolumeClaim:
    claimName: {{ include "totpgate.fullname" . }}
  {{- else }}
  emptyDir: {}
  {{- end }}
{{- if or .Values.sidecar.adminTokenSecret.name .Values.store.postgres.dsnSecret.name .Values.audit.webhook.secret.name }}
- name: totpgate-secrets
  projected:
    sources:
      {{- with .Values.sidecar.adminTokenSecret }}{{ if .name }}
      - secret:
          name: {{ .name }}
          items: [{key: {{ .key }}, path: admin-token}]
      {{- end }}{{ end }}
      {{- with .Values.store.postgres.dsnSecret }}{{ if .name }}
      - secret:
          name: {{ .name }}
          items: [{key: {{ .key }}, path: dsn}]
      {{- end }}{{ end }}
      {{- with .Values.audit.webhook.secret }}{{ if .name }}
      - secret:
          name: {{ .name }}
          items: [{key: {{ .key }}, path: webhook-secret}]
      {{- end }}{{ end }}
{{- end }}
{{- if and (eq .Values.keyring.backend "vault") .Values.keyring.vault.auth.secretName }}
- name: totpgate-vault
  secret:
    secretName: {{ .Values.keyring.vault.auth.secretName }}
{{- end }}
{{- if and (eq .Values.keyring.backend "vault") .Values.keyring.vault.caSecret }}
- name: totpgate-vault-ca
  secret:
    secretName: {{ .Values.keyring.vault.caSecret }}
{{- end }}
{{- end -}}
