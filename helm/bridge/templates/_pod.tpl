{{- /* The pod template the Deployment (one process) and the StatefulSet (fleet mode) share. */}}
{{- define "bridge.podTemplate" -}}
metadata:
  labels:
    {{- include "bridge.labels" . | nindent 4 }}
    {{- with .Values.podLabels }}
    {{- toYaml . | nindent 4 }}
    {{- end }}
  annotations:
    checksum/config: {{ include "bridge.config" . | sha256sum }}
    {{- if .Values.secret.create }}
    checksum/secret: {{ toYaml .Values.secret.data | sha256sum }}
    {{- end }}
    {{- with .Values.podAnnotations }}
    {{- toYaml . | nindent 4 }}
    {{- end }}
spec:
  serviceAccountName: {{ include "bridge.serviceAccountName" . }}
  automountServiceAccountToken: false
  terminationGracePeriodSeconds: {{ include "bridge.terminationGracePeriodSeconds" . }}
  {{- with .Values.priorityClassName }}
  priorityClassName: {{ . }}
  {{- end }}
  {{- with .Values.imagePullSecrets }}
  imagePullSecrets:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  securityContext:
    {{- toYaml .Values.podSecurityContext | nindent 4 }}
  containers:
    - name: bridge
      image: {{ include "bridge.image" . | quote }}
      imagePullPolicy: {{ .Values.image.pullPolicy }}
      args: ["run", "--config", "/etc/bridge/bridge.yaml"]
      {{- if or .Values.env (include "bridge.fleet" .) }}
      env:
        {{- if include "bridge.fleet" . }}
        # The fleet member id (the group's static member id): the pod's name, stable for a
        # StatefulSet's pod across restarts, so a restarted member gets its shards back.
        - name: BRIDGE_FLEET__MEMBER_ID
          valueFrom:
            fieldRef:
              fieldPath: metadata.name
        {{- end }}
        {{- with .Values.env }}
        {{- toYaml . | nindent 8 }}
        {{- end }}
      {{- end }}
      {{- with .Values.envFrom }}
      envFrom:
        {{- toYaml . | nindent 8 }}
      {{- end }}
      ports:
        - name: metrics
          containerPort: {{ .Values.metrics.port }}
          protocol: TCP
      livenessProbe:
        httpGet:
          path: /healthz
          port: metrics
        {{- toYaml .Values.probes.liveness | nindent 8 }}
      readinessProbe:
        httpGet:
          path: /readyz
          port: metrics
        {{- toYaml .Values.probes.readiness | nindent 8 }}
      resources:
        {{- toYaml .Values.resources | nindent 8 }}
      securityContext:
        {{- toYaml .Values.securityContext | nindent 8 }}
      volumeMounts:
        - name: config
          mountPath: /etc/bridge
          readOnly: true
        - name: tmp
          mountPath: /tmp
        {{- if include "bridge.diskBuffer" . }}
        - name: disk-buffer
          mountPath: {{ include "bridge.diskBufferPath" . | quote }}
        {{- end }}
        {{- with .Values.extraVolumeMounts }}
        {{- toYaml . | nindent 8 }}
        {{- end }}
  volumes:
    # bridge.yaml and the Secret's keys side by side: `api_secret_file: aquanow-api-secret`
    # in the config is a path relative to the config file.
    - name: config
      projected:
        defaultMode: 0440
        sources:
          - configMap:
              name: {{ include "bridge.fullname" . }}
              items:
                - key: bridge.yaml
                  path: bridge.yaml
          - secret:
              name: {{ include "bridge.secretName" . }}
          {{- with .Values.secret.extraSources }}
          {{- toYaml . | nindent 10 }}
          {{- end }}
    - name: tmp
      emptyDir:
        medium: Memory
        sizeLimit: 16Mi
    {{- if include "bridge.diskBuffer" . }}
    # The disk buffer (config.disk_buffer): frames not yet acknowledged by Kafka.
    - name: disk-buffer
      {{- if eq .Values.diskBuffer.volume "emptyDir" }}
      emptyDir:
        sizeLimit: {{ .Values.diskBuffer.size }}
      {{- else }}
      persistentVolumeClaim:
        claimName: {{ include "bridge.diskBufferClaim" . }}
      {{- end }}
    {{- end }}
    {{- with .Values.extraVolumes }}
    {{- toYaml . | nindent 4 }}
    {{- end }}
  {{- with .Values.nodeSelector }}
  nodeSelector:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  {{- with .Values.affinity }}
  affinity:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  {{- if include "bridge.fleet" . }}
  # Members on different nodes (and zones) where possible: a node failure takes as few
  # shards at once as the cluster allows.
  topologySpreadConstraints:
    {{- range .Values.fleet.topologySpreadKeys }}
    - maxSkew: 1
      topologyKey: {{ . }}
      whenUnsatisfiable: ScheduleAnyway
      labelSelector:
        matchLabels:
          {{- include "bridge.selectorLabels" $ | nindent 10 }}
    {{- end }}
  {{- end }}
  {{- with .Values.tolerations }}
  tolerations:
    {{- toYaml . | nindent 4 }}
  {{- end }}
{{- end }}
