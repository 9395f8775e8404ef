{{/*
A Faust worker Deployment and its PodDisruptionBudget.
Call with (dict "root" $ "component" name "values" componentValues "args" list
"appId" id "gpu" gpuValuesOrNil).
*/}}
{{- define "visearch.worker" -}}
{{- $root := .root -}}
{{- $v := .values -}}
{{- $gpu := false -}}
{{- if .gpu }}{{ $gpu = .gpu.enabled }}{{ end -}}
{{- $keepInline := true -}}
{{- if hasKey $root.Values.settings "keep_inline_uploads" }}{{ $keepInline = index $root.Values.settings "keep_inline_uploads" }}{{ end -}}
{{- $name := printf "%s-%s" (include "visearch.fullname" $root) .component -}}
apiVersion: apps/v1
kind: Deployment
metadata:
  name: {{ $name }}
  namespace: {{ $root.Release.Namespace }}
  labels:
    {{- include "visearch.labels" $root | nindent 4 }}
    app.kubernetes.io/component: {{ .component }}
  {{- include "visearch.workloadAnnotations" $root | nindent 2 }}
spec:
  {{- if not (and $v.autoscaling $v.autoscaling.enabled) }}
  replicas: {{ $v.replicas }}
  {{- end }}
  selector:
    matchLabels:
      {{- include "visearch.selectorLabels" $root | nindent 6 }}
      app.kubernetes.io/component: {{ .component }}
  template:
    metadata:
      labels:
        {{- include "visearch.selectorLabels" $root | nindent 8 }}
        app.kubernetes.io/component: {{ .component }}
    spec:
      {{- include "visearch.podCommon" (dict "root" $root) | nindent 6 }}
      # Faust leaves its consumer group on SIGTERM; give it time to commit.
      terminationGracePeriodSeconds: 60
      containers:
        - name: worker
          image: {{ include "visearch.image" (dict "root" $root "cuda" $gpu) }}
          imagePullPolicy: {{ $root.Values.image.pullPolicy }}
          args: {{ toJson .args }}
          env:
            {{- include "visearch.env" (dict "root" $root "appId" .appId) | nindent 12 }}
            - name: VISEARCH_WORKER_WEB_PORT
              value: {{ $v.webPort | quote }}
          ports:
            - name: web
              containerPort: {{ $v.webPort }}
          # Faust's web server answers / once the worker runs; loading the encoder takes a while.
          startupProbe:
            httpGet: {path: /, port: web}
            periodSeconds: 2
            failureThreshold: 90
          livenessProbe:
            httpGet: {path: /, port: web}
            periodSeconds: 15
            failureThreshold: 4
          readinessProbe:
            httpGet: {path: /, port: web}
            periodSeconds: 10
          resources:
            {{- $resources := deepCopy $v.resources }}
            {{- if $gpu }}
            {{- $_ := set $resources.limits $.gpu.resourceName ($.gpu.count | int) }}
            {{- end }}
            {{- toYaml $resources | nindent 12 }}
          securityContext:
            {{- toYaml $root.Values.securityContext | nindent 12 }}
          volumeMounts:
            - {name: data, mountPath: /var/lib/visearch}
            # Writable while the worker keeps inline uploads (settings.keep_inline_uploads).
            - {name: images, mountPath: /var/lib/visearch/images, readOnly: {{ not $keepInline }}}
            - {name: tmp, mountPath: /tmp}
            {{- include "visearch.kafkaVolumeMounts" $root | nindent 12 }}
      volumes:
        - name: data
          emptyDir: {}
        {{- include "visearch.imageStoreVolume" $root | nindent 8 }}
        {{- include "visearch.tmpVolume" $root | nindent 8 }}
        {{- include "visearch.kafkaVolumes" $root | nindent 8 }}
      {{- $nodeSelector := merge (deepCopy (default dict $v.nodeSelector)) (ternary $.gpu.nodeSelector dict $gpu) }}
      {{- with $nodeSelector }}
      nodeSelector:
        {{- toYaml . | nindent 8 }}
      {{- end }}
      {{- $tolerations := concat (default list $v.tolerations) (ternary $.gpu.tolerations list $gpu) }}
      {{- with $tolerations }}
      tolerations:
        {{- toYaml . | nindent 8 }}
      {{- end }}
      {{- with $v.affinity }}
      affinity:
        {{- toYaml . | nindent 8 }}
      {{- end }}
---
apiVersion: policy/v1
kind: PodDisruptionBudget
metadata:
  name: {{ $name }}
  namespace: {{ $root.Release.Namespace }}
  labels:
    {{- include "visearch.labels" $root | nindent 4 }}
    app.kubernetes.io/component: {{ .component }}
spec:
  maxUnavailable: {{ $v.pdb.maxUnavailable }}
  selector:
    matchLabels:
      {{- include "visearch.selectorLabels" $root | nindent 6 }}
      app.kubernetes.io/component: {{ .component }}
{{- end -}}
