{{/* Names and labels. */}}
{{- define "bridge.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "bridge.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{- define "bridge.selectorLabels" -}}
app.kubernetes.io/name: {{ include "bridge.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{/* `part-of: bridge` is the ServiceMonitor's jobLabel: every bridge's job is "bridge",
whatever the release or name override, because the alert rules select job="bridge". */}}
{{- define "bridge.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{ include "bridge.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: bridge
{{- with .Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{/* repository:tag, or repository@digest when image.digest is set (the tag is then only
informative and left out: the digest decides). */}}
{{- define "bridge.image" -}}
{{- if .Values.image.digest }}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository (.Values.image.tag | default .Chart.AppVersion) }}
{{- end }}
{{- end }}

{{- define "bridge.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "bridge.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "bridge.secretName" -}}
{{- default (include "bridge.fullname" .) .Values.secret.name }}
{{- end }}

{{/* The bridge's config file: the user's `config` plus the metrics listener the chart owns. */}}
{{- define "bridge.config" -}}
{{- $config := deepCopy .Values.config }}
{{- $_ := set $config "metrics" (dict "host" "0.0.0.0" "port" (int .Values.metrics.port) "stream_histograms" (not (eq .Values.metrics.streamHistograms false))) }}
{{- toYaml $config }}
{{- end }}

{{/* SIGTERM → SIGKILL: longer than the bridge's flush grace plus closing time. */}}
{{- define "bridge.terminationGracePeriodSeconds" -}}
{{- $grace := 20 }}
{{- if and .Values.config.shutdown .Values.config.shutdown.grace_seconds }}
{{- $grace = .Values.config.shutdown.grace_seconds | ceil | int }}
{{- end }}
{{- $seconds := .Values.terminationGracePeriodSeconds | default (add $grace 15) | int }}
{{- if lt $seconds (add $grace 10 | int) }}
{{- fail (printf "terminationGracePeriodSeconds (%d) must be at least config.shutdown.grace_seconds + 10 (%d): Kubernetes would kill the bridge while it flushes" $seconds (add $grace 10 | int)) }}
{{- end }}
{{- $seconds }}
{{- end }}

{{/* The alert rules: files/alerts.yaml verbatim (byte for byte) unless values change them. */}}
{{- define "bridge.alertRules" -}}
{{- $p := .Values.prometheusRule }}
{{- $raw := .Files.Get "files/alerts.yaml" }}
{{- if not (or $p.overrides $p.disabled $p.ruleLabels $p.runbookBaseUrl) }}
{{- $raw }}
{{- else }}
{{- $doc := fromYaml $raw }}
{{- $known := list }}
{{- $groups := list }}
{{- range $group := $doc.groups }}
{{- $rules := list }}
{{- range $rule := $group.rules }}
{{- $known = append $known $rule.alert }}
{{- if not (has $rule.alert $p.disabled) }}
{{- $o := get $p.overrides $rule.alert | default dict }}
{{- if hasKey $o "threshold" }}
{{- $found := regexFindAll ">=? *[0-9.]+" $rule.expr -1 | last }}
{{- if not $found }}
{{- fail (printf "prometheusRule.overrides.%s.threshold: this alert has no threshold" $rule.alert) }}
{{- end }}
{{- $op := regexFind ">=?" $found }}
{{- $_ := set $rule "expr" (replace $found (printf "%s %v" $op $o.threshold) $rule.expr) }}
{{- end }}
{{- if hasKey $o "for" }}
{{- $_ := set $rule "for" $o.for }}
{{- end }}
{{- $labels := merge (dict) $rule.labels $p.ruleLabels }}
{{- if hasKey $o "severity" }}
{{- $_ := set $labels "severity" $o.severity }}
{{- end }}
{{- $_ := set $rule "labels" $labels }}
{{- if $p.runbookBaseUrl }}
{{- $url := replace "https://venue-bridge.example/README.md" $p.runbookBaseUrl $rule.annotations.runbook_url }}
{{- $_ := set $rule.annotations "runbook_url" $url }}
{{- end }}
{{- $rules = append $rules $rule }}
{{- end }}
{{- end }}
{{- $groups = append $groups (dict "name" $group.name "rules" $rules) }}
{{- end }}
{{- range $name := concat (keys $p.overrides) $p.disabled }}
{{- if not (has $name $known) }}
{{- fail (printf "prometheusRule: no alert named %s (known: %s)" $name (join ", " $known)) }}
{{- end }}
{{- end }}
{{- toYaml (dict "groups" $groups) }}
{{- end }}
{{- end }}

{{/* The disk buffer is on: config.disk_buffer.enabled is true (a string "false" is off). */}}
{{- define "bridge.diskBuffer" -}}
{{- $on := dig "disk_buffer" "enabled" false .Values.config }}
{{- if and $on (ne (toString $on) "false") }}on{{ end }}
{{- end }}

{{- define "bridge.diskBufferPath" -}}
{{- dig "disk_buffer" "path" "/var/lib/bridge/buffer" .Values.config }}
{{- end }}

{{- define "bridge.diskBufferClaim" -}}
{{- default (printf "%s-disk-buffer" (include "bridge.fullname" .)) .Values.diskBuffer.existingClaim }}
{{- end }}

{{/*
"true" in fleet mode (config.fleet.enabled: a StatefulSet of members, README "Scaling"), else "".
*/}}
{{- define "bridge.fleet" -}}
{{- if dig "fleet" "enabled" false .Values.config }}true{{ end }}
{{- end }}
